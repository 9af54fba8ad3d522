//! One test per data-model rule, each with a document that breaks it.

use serde_json::{json, Value};

use super::*;

fn env(id: &str, slug: &str) -> Value {
    json!({
        "id": id, "slug": slug, "name": slug.to_uppercase(), "color": "#16a34a",
        "system": slug == "prod" || slug == "staging",
        "pointers": {"prompts": {"summarize": "17"}}
    })
}

fn base() -> Value {
    let mut prod = env("env_prod", "prod");
    prod["gateway_fallback"] = json!(true);
    prod["default_publish_target"] = json!(true);
    prod["position"] = json!(0);
    let mut staging = env("env_staging", "staging");
    staging["position"] = json!(1);
    json!({"id": "acme-chat", "revision": 1, "environments": [prod, staging, env("env_qa", "qa")]})
}

fn check(doc: Value) -> Result<ValidProject, ValidationError> {
    validate(
        serde_json::from_value(doc).expect("fixture is readable"),
        &[],
    )
}

fn rejected(doc: Value, reason: Reason) {
    match check(doc) {
        Ok(_) => panic!("expected rejection {reason:?}, document was accepted"),
        Err(e) => assert_eq!(e.reason, reason, "message: {}", e.message),
    }
}

#[test]
fn the_base_fixture_is_valid() {
    let p = check(base()).unwrap();
    assert_eq!(p.id(), "acme-chat");
    let slugs: Vec<_> = p.environments().iter().map(|e| e.slug.as_str()).collect();
    assert_eq!(
        slugs,
        ["prod", "staging", "qa"],
        "position order, unpositioned last"
    );
}

#[test]
fn project_id_with_bad_characters_or_length() {
    for id in ["", "acme chat", "acme/chat", "é", &"a".repeat(129)] {
        let mut d = base();
        d["id"] = json!(id);
        rejected(d, Reason::InvalidProjectId);
    }
    let mut d = base();
    d["id"] = json!("A".repeat(128));
    assert!(check(d).is_ok(), "128 characters is allowed");
}

#[test]
fn fewer_than_two_or_more_than_256_environments() {
    let mut d = base();
    d["environments"] = json!([d["environments"][0].clone()]);
    rejected(d, Reason::EnvironmentCount);
    let mut d = base();
    let envs = d["environments"].as_array_mut().unwrap();
    for i in 0..254 {
        envs.push(env(&format!("e{i}"), &format!("c{i}")));
    }
    rejected(d, Reason::EnvironmentCount);
}

#[test]
fn two_gateway_fallbacks() {
    let mut d = base();
    d["environments"][1]["gateway_fallback"] = json!(true);
    rejected(d, Reason::GatewayFallback);
}

#[test]
fn no_gateway_fallback() {
    let mut d = base();
    d["environments"][0]["gateway_fallback"] = json!(false);
    rejected(d, Reason::GatewayFallback);
}

#[test]
fn two_publish_targets() {
    let mut d = base();
    d["environments"][2]["default_publish_target"] = json!(true);
    rejected(d, Reason::PublishTarget);
}

#[test]
fn no_publish_target() {
    let mut d = base();
    d["environments"][0]["default_publish_target"] = json!(false);
    rejected(d, Reason::PublishTarget);
}

#[test]
fn missing_staging() {
    let mut d = base();
    d["environments"].as_array_mut().unwrap().remove(1);
    rejected(d, Reason::ReservedSlug);
}

#[test]
fn missing_prod() {
    let mut d = base();
    d["environments"][1]["gateway_fallback"] = json!(true);
    d["environments"][1]["default_publish_target"] = json!(true);
    d["environments"].as_array_mut().unwrap().remove(0);
    rejected(d, Reason::ReservedSlug);
}

#[test]
fn reserved_slug_on_a_custom_environment_is_a_duplicate() {
    let mut d = base();
    d["environments"][2]["slug"] = json!("prod");
    d["environments"][2]["system"] = json!(true);
    rejected(d, Reason::DuplicateSlug);
}

#[test]
fn system_on_a_custom_environment() {
    let mut d = base();
    d["environments"][2]["system"] = json!(true);
    rejected(d, Reason::SystemFlag);
}

#[test]
fn system_missing_on_staging() {
    let mut d = base();
    d["environments"][1]["system"] = json!(false);
    rejected(d, Reason::SystemFlag);
}

#[test]
fn bad_slugs() {
    for slug in [
        "QA",
        "q_a",
        "1qa",
        "-qa",
        "qa-",
        "",
        "q a",
        "qä",
        &format!("a{}", "b".repeat(64)),
    ] {
        let mut d = base();
        d["environments"][2]["slug"] = json!(slug);
        rejected(d, Reason::InvalidSlug);
    }
    let mut d = base();
    d["environments"][2]["slug"] = json!(format!("a{}", "-b".repeat(31)));
    assert!(
        check(d).is_ok(),
        "63 characters with inner dashes is allowed"
    );
}

#[test]
fn sixty_five_character_name() {
    let mut d = base();
    d["environments"][2]["name"] = json!("n".repeat(65));
    rejected(d, Reason::InvalidName);
    let mut d = base();
    d["environments"][2]["name"] = json!("");
    rejected(d, Reason::InvalidName);
}

#[test]
fn name_limit_counts_characters_not_bytes() {
    let mut d = base();
    d["environments"][2]["name"] = json!("é".repeat(64)); // 128 bytes
    assert!(check(d).is_ok());
}

#[test]
fn description_of_281_characters() {
    let mut d = base();
    d["environments"][2]["description"] = json!("d".repeat(281));
    rejected(d, Reason::InvalidDescription);
    let mut d = base();
    d["environments"][2]["description"] = json!("ü".repeat(280)); // 560 bytes
    assert!(
        check(d).is_ok(),
        "280 characters is allowed whatever their byte length"
    );
}

#[test]
fn bad_colors() {
    for color in ["16a34a", "#16a34", "#16a34aa", "#16a34g", "", "red"] {
        let mut d = base();
        d["environments"][2]["color"] = json!(color);
        rejected(d, Reason::InvalidColor);
    }
    let mut d = base();
    d["environments"][2]["color"] = json!("#ABCdef");
    assert!(check(d).is_ok());
}

#[test]
fn duplicate_slug() {
    let mut d = base();
    d["environments"][2]["slug"] = json!("staging");
    d["environments"][2]["system"] = json!(true);
    rejected(d, Reason::DuplicateSlug);
}

#[test]
fn duplicate_environment_id() {
    let mut d = base();
    d["environments"][2]["id"] = json!("env_prod");
    rejected(d, Reason::DuplicateEnvironmentId);
}

#[test]
fn bad_environment_id() {
    let mut d = base();
    d["environments"][2]["id"] = json!("env qa");
    rejected(d, Reason::InvalidEnvironmentId);
}

#[test]
fn oversize_pointer_key_and_value() {
    let mut d = base();
    d["environments"][2]["pointers"] = json!({"prompts": {"k".repeat(129): "1"}});
    rejected(d, Reason::InvalidPointer);
    let mut d = base();
    d["environments"][2]["pointers"] = json!({"routing_rules": {"default": "v".repeat(129)}});
    rejected(d, Reason::InvalidPointer);
    let mut d = base();
    d["environments"][2]["pointers"] = json!({"providers": {"openai": ""}});
    rejected(d, Reason::InvalidPointer);
    let mut d = base();
    d["environments"][2]["pointers"] = json!({"providers": {"openai": "act\n9"}});
    rejected(d, Reason::InvalidPointer);
    let mut d = base();
    d["environments"][2]["pointers"] = json!({"providers": {"": "act-9"}});
    rejected(d, Reason::InvalidPointer);
}

#[test]
fn more_than_4096_pointers() {
    let many: serde_json::Map<String, Value> =
        (0..4097).map(|i| (format!("p{i}"), json!("1"))).collect();
    let mut d = base();
    d["environments"][2]["pointers"] = json!({"prompts": many});
    rejected(d, Reason::TooManyPointers);
}

#[test]
fn scheduled_overlay_that_would_exceed_4096_pointers() {
    let base_map: serde_json::Map<String, Value> =
        (0..4096).map(|i| (format!("p{i}"), json!("1"))).collect();
    let mut d = base();
    d["environments"][2]["pointers"] = json!({"prompts": base_map});
    d["environments"][2]["scheduled"] =
        json!([{"at": "2030-01-01T00:00:00Z", "pointers": {"providers": {"extra": "1"}}}]);
    rejected(d, Reason::TooManyPointers);
}

#[test]
fn scheduled_with_unknown_kind_or_bad_time_or_bad_value() {
    let mut d = base();
    d["environments"][0]["scheduled"] =
        json!([{"at": "2030-01-01T00:00:00Z", "pointers": {"models": {"a": "1"}}}]);
    rejected(d, Reason::InvalidSchedule);
    let mut d = base();
    d["environments"][0]["scheduled"] =
        json!([{"at": "tomorrow", "pointers": {"prompts": {"a": "1"}}}]);
    rejected(d, Reason::InvalidSchedule);
    let mut d = base();
    d["environments"][0]["scheduled"] =
        json!([{"at": "2030-01-01T00:00:00Z", "pointers": {"prompts": {"a": "x".repeat(129)}}}]);
    rejected(d, Reason::InvalidPointer);
}

#[test]
fn slug_change_against_the_last_accepted_document() {
    let first = [
        ("env_prod", "prod"),
        ("env_staging", "staging"),
        ("env_qa", "qa"),
    ];
    let mut d = base();
    d["revision"] = json!(2);
    d["environments"][2]["slug"] = json!("quality");
    let err = validate(serde_json::from_value(d).unwrap(), &first).unwrap_err();
    assert_eq!(err.reason, Reason::SlugChanged);
    // A new environment id with a new slug is fine.
    let mut d = base();
    d["environments"]
        .as_array_mut()
        .unwrap()
        .push(env("env_canary", "canary"));
    assert!(validate(serde_json::from_value(d).unwrap(), &first).is_ok());
}

#[test]
fn schedule_overlays_in_time_order_later_wins() {
    let mut d = base();
    d["environments"][0]["pointers"] =
        json!({"prompts": {"a": "1", "b": "1"}, "providers": {"x": "1"}});
    d["environments"][0]["scheduled"] = json!([
        {"at": "2030-01-02T00:00:00Z", "pointers": {"prompts": {"a": "3"}}},
        {"at": "2030-01-01T00:00:00Z", "pointers": {"prompts": {"a": "2", "c": "2"}}}
    ]);
    let p = check(d).unwrap();
    assert_eq!(p.schedule().len(), 2);
    let one = p.pointers_with(0, 1);
    assert_eq!(one.prompts.get("a"), Some("2"));
    assert_eq!(one.prompts.get("c"), Some("2"));
    let both = p.pointers_with(0, 2);
    assert_eq!(both.prompts.get("a"), Some("3"), "the later entry wins");
    assert_eq!(
        both.prompts.get("b"),
        Some("1"),
        "keys not mentioned keep their value"
    );
    assert_eq!(both.providers.get("x"), Some("1"));
}

#[test]
fn the_json_form_reads_back_as_the_same_project() {
    let mut d = base();
    d["environments"][2]["position"] = json!(-1);
    d["environments"][0]["scheduled"] =
        json!([{"at": "2030-01-01T00:00:00Z", "pointers": {"prompts": {"a": "2"}}}]);
    d["environments"][1]["pending"] = json!([{"kind": "prompts", "key": "a", "version": "9"}]);
    d["environments"][1]["description"] = json!("caf\u{e9} \"quoted\" \n");
    d["published_at"] = json!("2026-01-01T00:00:00Z");
    d["unknown_field"] = json!({"ignored": true});
    let p = check(d).unwrap();
    let back: WireProject = serde_json::from_str(&p.to_json()).unwrap();
    assert_eq!(back, *p.document(), "environments stay in serving order");
    assert_eq!(validate(back, &[]).unwrap(), p);
}

#[test]
fn unreadable_published_at_is_ignored_not_fatal() {
    let mut d = base();
    d["published_at"] = json!("yesterday");
    assert_eq!(check(d).unwrap().published_at(), None);
}

#[test]
fn reason_codes_are_distinct() {
    let codes: HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(codes.len(), Reason::ALL.len());
}

#[test]
fn request_slugs_are_lowered_and_checked() {
    let mut buf = [0u8; MAX_SLUG_LEN];
    assert_eq!(lower_slug("Canary-2", &mut buf), Some(&b"canary-2"[..]));
    for bad in ["", "2x", "x-", "x_y", "x y", "é", &"a".repeat(65)] {
        assert_eq!(lower_slug(bad, &mut buf), None, "{bad:?}");
    }
    assert!(lower_slug(&"a".repeat(64), &mut buf).is_some());
}
