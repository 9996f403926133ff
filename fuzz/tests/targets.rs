//! One bounded run of the seeded mutation fuzzer per target; each asserts
//! the parser returns (`Ok` or `Err`) and never panics. See the README for
//! longer and coverage-guided runs.

use berth_fuzz::{run, targets};

fn fuzz(name: &str) {
    let def = targets::by_name(name).unwrap_or_else(|| panic!("no fuzz target {name}"));
    let stats = run(&def.target, def.check);
    assert!(stats.seeds > 0 && stats.executions >= stats.seeds as u64);
}

#[test]
fn every_target_has_a_test_here() {
    let tested = [
        "reference",
        "manifest",
        "filters",
        "config",
        "hosts",
        "layer",
        "auth",
        "events",
        "options",
        "oci_hook",
        "user",
    ];
    let all: Vec<String> = targets::all()
        .into_iter()
        .map(|d| d.target.name.to_string())
        .collect();
    assert_eq!(all, tested, "add a test below for each new target");
}

#[test]
fn image_reference() {
    fuzz("reference");
}

#[test]
fn manifest_index_config_json() {
    fuzz("manifest");
}

#[test]
fn containerd_filters() {
    fuzz("filters");
}

#[test]
fn daemon_config_toml() {
    fuzz("config");
}

#[test]
fn registry_hosts_toml() {
    fuzz("hosts");
}

#[test]
fn layer_tar_apply_stays_inside_the_root() {
    fuzz("layer");
}

#[test]
fn registry_auth_challenges() {
    fuzz("auth");
}

#[test]
fn event_envelopes() {
    fuzz("events");
}

#[test]
fn runtime_and_task_options() {
    fuzz("options");
}

#[test]
fn oci_hook_state_and_templates() {
    fuzz("oci_hook");
}

#[test]
fn image_passwd_and_group() {
    fuzz("user");
}
