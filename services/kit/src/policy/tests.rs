//! The policy's rules, refusals, file errors and profiles.

use super::*;

const POLICY: &str = r#"
[roles.analyst]
allow = [{ categories = ["business_intelligence"] }, { read_only = true }]
deny = [{ destructive = true }]

[roles.operator]
allow = [{ tools = ["pulumi_*"] }]

[roles."*"]
allow = [{ tools = ["echo"] }]
"#;

fn hints(read_only: bool, destructive: bool) -> Hints {
    Hints {
        read_only,
        destructive,
        ..Hints::default()
    }
}

#[test]
fn roles_allow_by_category_annotation_and_name_and_deny_wins() {
    let p = Policy::parse(POLICY, "test").unwrap();
    let analyst = ["analyst".to_owned()];
    let bi = Item::tool(
        "gong_calls",
        Category::BusinessIntelligence,
        hints(false, false),
    );
    let preview = Item::tool(
        "pulumi_preview",
        Category::Infrastructure,
        hints(true, false),
    );
    let up = Item::tool("pulumi_up", Category::Infrastructure, hints(false, true));
    assert_eq!(p.decide(&analyst, &bi), Ok(()));
    assert_eq!(p.decide(&analyst, &preview), Ok(()));
    assert_eq!(
        p.decide(&analyst, &up),
        Err(Denied::DeniedBy("analyst".into()))
    );
    // The operator may; a principal with both roles may not (deny wins).
    assert_eq!(p.decide(&["operator".into()], &up), Ok(()));
    assert!(
        p.decide(&["operator".into(), "analyst".into()], &up)
            .is_err()
    );
    // Everyone may echo; nobody else may do anything by default.
    let echo = Item::tool("echo", Category::CodeGeneration, hints(false, false));
    assert_eq!(p.decide(&[], &echo), Ok(()));
    assert_eq!(p.decide(&[], &bi), Err(Denied::NoRule));
    // Offers are read-only: the analyst reads resources, the operator does not.
    assert_eq!(p.decide(&analyst, &Item::offer("docs")), Ok(()));
    assert_eq!(
        p.decide(&["operator".into()], &Item::offer("docs")),
        Err(Denied::NoRule)
    );
}

#[test]
fn a_typo_is_one_line_naming_the_place() {
    let bad = "[roles.analyst]\nallow = [{ categroies = [\"business_intelligence\"] }]\n";
    let e = Policy::parse(bad, "policy.toml").unwrap_err().to_string();
    assert!(e.starts_with("policy file policy.toml:2:"), "{e}");
    assert!(e.contains("categroies"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    let bad = "[roles.a]\nallow = [{ categories = [\"finance\"] }]\n";
    let e = Policy::parse(bad, "p").unwrap_err().to_string();
    assert!(e.contains("p:2:") && e.contains("finance"), "{e}");
    let bad = "[roles.a]\nallow = [{ tools = [\"a[\"] }]\n";
    assert!(
        Policy::parse(bad, "p")
            .unwrap_err()
            .to_string()
            .contains("p:2:")
    );
    let bad = "[roles.a]\nallow = [{}]\n";
    assert!(
        Policy::parse(bad, "p")
            .unwrap_err()
            .to_string()
            .contains("empty rule")
    );
}

#[test]
fn the_refusal_names_the_permission_and_nothing_else() {
    let p = Policy::parse(POLICY, "test").unwrap();
    let up = Item::tool("pulumi_up", Category::Infrastructure, hints(false, true));
    let why = p.decide(&[], &up).unwrap_err();
    let text = refusal("alice", &[], &up, &why);
    assert!(text.contains("may not call `pulumi_up`"), "{text}");
    assert!(
        !text.contains("pulumi_preview") && !text.contains("operator"),
        "{text}"
    );
}

#[test]
fn the_example_policy_parses() {
    let text = include_str!("../../../../ops/policy/example.toml");
    let p = Policy::parse(text, "ops/policy/example.toml").unwrap();
    let up = Item::tool("pulumi_up", Category::Infrastructure, hints(false, true));
    assert!(p.decide(&["analyst".into()], &up).is_err());
    assert_eq!(p.decide(&["operator".into()], &up), Ok(()));
    assert!(p.profile("sales").is_some() && p.profile("ask").is_some());
}

#[test]
fn default_profiles_are_ask_agent_and_background() {
    let p = Policy::parse("", "empty").unwrap();
    let ask = p.profile("ask").unwrap();
    let up = Item::tool("pulumi_up", Category::Infrastructure, hints(false, true));
    let list = Item::tool(
        "pulumi_stacks",
        Category::Infrastructure,
        hints(true, false),
    );
    assert!(!ask.offers(&up) && ask.offers(&list));
    assert!(p.profile("agent").unwrap().confirm_destructive);
    assert!(p.profile("background").unwrap().offers(&up));
}
