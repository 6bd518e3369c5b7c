//! JSON Schema checks of tool arguments, shared by the gateway (before a call
//! goes on the bus) and the kit (for callers that skip the gateway).

use serde_json::Value;

/// Every way `value` breaks `validator`'s schema, each as
/// `"/json/pointer: what is wrong"`; empty when it fits.
pub fn problems(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("{at}: {e}")
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
    }
}
