//! JSON Schema checks of tool arguments, shared by the gateway (before a call
//! goes on the bus) and the kit (for callers that skip the gateway).

use serde_json::Value;

/// Every way `value` breaks `validator`'s schema, each as
/// `"/json/pointer: what is wrong"`; empty when it fits.
///
/// The offending value itself is not repeated ("the value is not of type
/// \"string\"", not "12345 is not of type..."): arguments can carry secrets
/// (a config value, a token), and these messages reach logs and clients.
pub fn problems(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| {
            let message = e.to_string();
            let shown = e.instance().to_string();
            let message = match message.strip_prefix(&shown) {
                Some(rest) if !shown.is_empty() => format!("the value{rest}"),
                _ => message,
            };
            let at = e.instance_path().to_string();
            if at.is_empty() {
                message
            } else {
                format!("{at}: {message}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn problems_name_the_field_and_what_is_wrong() {
        let v = jsonschema::validator_for(&json!({"type": "object",
            "properties": {"n": {"type": "integer"}}, "required": ["n"]}))
        .unwrap();
        assert!(super::problems(&v, &json!({"n": 3})).is_empty());
        let p = super::problems(&v, &json!({"n": "three"}));
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("/n: ") && p[0].contains("integer"),
            "{p:?}"
        );
        assert!(super::problems(&v, &json!({}))[0].contains("required"));
        let p = super::problems(&v, &json!({"n": "hunter2"}));
        assert!(!p[0].contains("hunter2"), "{p:?}");
    }
}

/// The `{limit?}` argument of a tool that lists things: at most
/// [`ListLimit::max`] items, [`ListLimit::default`] unless asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListLimit {
    /// How many a list returns unless asked otherwise.
    pub default: u64,
    /// The most it returns.
    pub max: u64,
}

impl ListLimit {
    /// 20 unless asked, at most 100: what the workers' listing tools take.
    pub const STANDARD: ListLimit = ListLimit {
        default: 20,
        max: 100,
    };

    /// The input schema `{limit?}`, with nothing else allowed.
    pub fn schema(self) -> Value {
        serde_json::json!({"type": "object", "properties": {"limit": {"type": "integer",
            "minimum": 1, "maximum": self.max, "default": self.default,
            "description": "How many to list at most"}},
            "additionalProperties": false})
    }

    /// The limit a call's `args` ask for, within bounds.
    pub fn of(self, args: &Value) -> usize {
        let limit = args["limit"].as_u64().unwrap_or(self.default);
        limit.clamp(1, self.max) as usize
    }
}
