//! Runs to completion: the built-in tools, command tools with their inputs, progress, results
//! and outputs, and what a run used.

use serde_json::json;

use super::spawn;
use crate::support::WAIT;

#[tokio::test]
async fn the_builtin_tools_run_to_completion_with_their_results() {
    let app = spawn(2).await;
    let (alice, ws) = app.setup("lab", 1000).await;
    let sequences = json!([{"name": "sequences", "text": ">a\nATGGCCTAA\n>b\nGGCC\n"}]);
    let stats = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "sequence-stats", "inputs": sequences.clone()}),
        )
        .await;
    let kmers = app.submit(&alice, &ws, json!({"tool": "kmer-count", "inputs": sequences.clone(), "settings": {"k": 2, "top": 1}}))
    .await;
    let protein = app.submit(&alice, &ws, json!({"tool": "translate-dna", "inputs": sequences, "settings": {"stop_at_first_stop": true}}))
    .await;
    let noop = app.submit(&alice, &ws, json!({"tool": "noop"})).await;

    let job = app.wait_final(&alice.token, &stats, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(job["result"]["count"], 2);
    assert_eq!(job["result"]["totalLength"], 13);
    assert_eq!(job["progress"], 1.0);
    assert!(job["resources"]["wallSeconds"].as_f64().unwrap() >= 0.0);
    let job = app.wait_final(&alice.token, &kmers, WAIT).await;
    // GG, GC and CC occur twice each; ties rank alphabetically.
    assert_eq!(job["result"]["kmers"], json!([{"kmer": "CC", "count": 2}]));
    let job = app.wait_final(&alice.token, &protein, WAIT).await;
    assert_eq!(job["result"]["proteins"][0]["protein"], "MA");
    let job = app.wait_final(&alice.token, &noop, WAIT).await;
    assert_eq!(job["status"], "COMPLETED");
    assert_eq!(job["attempt"], 1);
    let statuses: Vec<_> = job["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [json!("QUEUED"), json!("PROCESSING"), json!("COMPLETED")]
    );
    // Statistics 1 + 1, k-mers 2 + 1 + k = 2, translation 1 + 1, no-op 0.
    assert_eq!(app.balance(&ws).await, 1000 - 2 - 5 - 2);
}

#[tokio::test]
async fn the_sleep_demo_reports_its_stages_on_the_timeline() {
    let app = spawn(1).await;
    let (alice, ws) = app.setup("lab", 1000).await;
    let id = app.submit(&alice, &ws, json!({"tool": "sleep", "settings": {"seconds": 0.6, "stages": ["Docking", "Scoring"]}}))
    .await;
    let job = app.wait_final(&alice.token, &id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED");
    let stages: Vec<_> = job["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["stage"].as_str())
        .collect();
    assert_eq!(stages, ["Docking", "Scoring"]);
}

#[tokio::test]
async fn the_stages_of_runs_reporting_together_are_each_recorded_in_order() {
    // Forty runs at once, each walking through five stages without pause: their reports
    // arrive together and are written in groups, one transaction each.
    let app = spawn(40).await;
    let (alice, ws) = app.setup("lab", 1000).await;
    let stages = ["one", "two", "three", "four", "five"];
    let mut ids = Vec::new();
    for _ in 0..40 {
        let input = json!({"tool": "sleep", "settings": {"seconds": 0, "stages": stages}});
        ids.push(app.submit(&alice, &ws, input).await);
    }
    for id in &ids {
        let job = app.wait_final(&alice.token, id, WAIT).await;
        assert_eq!(job["status"], "COMPLETED", "{job}");
        assert_eq!(job["progress"], 1.0, "{job}");
        let recorded: Vec<_> = job["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["stage"].as_str())
            .collect();
        assert_eq!(recorded, stages, "{job}");
    }
}

#[tokio::test]
async fn a_command_tool_runs_with_inputs_progress_result_and_outputs() {
    let app = spawn(1).await;
    let (alice, ws) = app.setup("lab", 1000).await;
    let id = app.submit(&alice, &ws, json!({"tool": "count", "inputs": [{"name": "text", "text": "hello"}], "settings": {"label": "greeting"}}))
    .await;
    let job = app.wait_final(&alice.token, &id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(
        job["result"],
        json!({"bytes": 5, "label": "greeting", "outputFiles": [{"name": "report.txt", "bytes": 3}]})
    );
    assert!(
        job["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["stage"] == "Counting"),
        "{job}"
    );
}

#[tokio::test]
async fn a_command_run_records_the_cpu_time_and_peak_memory_of_its_program() {
    let app = spawn(2).await;
    let (alice, ws) = app.setup("lab", 1000).await;
    // The shell waits for python, so what python used counts as the run's.
    let burnt = app.submit(&alice, &ws, json!({"tool": "burn"})).await;
    let failed = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "crash", "settings": {"code": 3}}),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let timed_out = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "hang", "settings": {"pidfile": pidfile.display().to_string()}}),
        )
        .await;
    let resources = |id: String| {
        let app = &app;
        let token = alice.token.clone();
        async move {
            let job = app.wait_final(&token, &id, WAIT).await;
            let data = app
                .ok(
                    Some(&token),
                    "query($id: ID!) { job(id: $id) { resources } }",
                    json!({ "id": id }),
                )
                .await;
            (job["status"].clone(), data["job"]["resources"].clone())
        }
    };

    let (status, used) = resources(burnt).await;
    assert_eq!(status, "COMPLETED", "{used}");
    assert!(used["wallSeconds"].as_f64().unwrap() > 0.3, "{used}");
    assert!(used["cpuUserSeconds"].as_f64().unwrap() > 0.1, "{used}");
    assert!(used["cpuSystemSeconds"].as_f64().unwrap() >= 0.0, "{used}");
    assert!(
        used["peakMemoryBytes"].as_u64().unwrap() > 40 * 1024 * 1024,
        "{used}"
    );

    // A failed run and a timed-out one (its program killed, then reaped) record theirs too.
    for (id, ending) in [(failed, "FAILED"), (timed_out, "TIMEOUT")] {
        let (status, used) = resources(id).await;
        assert_eq!(status, ending, "{used}");
        for key in [
            "wallSeconds",
            "cpuUserSeconds",
            "cpuSystemSeconds",
            "peakMemoryBytes",
        ] {
            assert!(used[key].is_number(), "{ending} lacks {key}: {used}");
        }
        assert!(used["peakMemoryBytes"].as_u64().unwrap() > 0, "{used}");
    }
}
