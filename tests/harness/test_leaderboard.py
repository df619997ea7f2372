"""The leaderboard's ranking and rendering on boards built by hand (the MLflow path: test_suite_runs)."""

import dataclasses
import json
import shutil
import subprocess

import numpy as np
import pytest

from advbench.harness import leaderboard, report
from advbench.harness.leaderboard import Board, CellRun
from advbench.harness.metrics import RunSummary


def cell(label, seed, start, curve, task="arithmetic", k8=0.8):
    """A finished run whose eval pass@1 at steps 0, 10, ... is ``curve``."""
    curve = np.array(curve, dtype=float)
    from advbench.harness.metrics import smooth, smoothed_index

    smoothed = smooth(curve, 3)
    point = int(np.argmax(smoothed))
    peak = int(smoothed_index(len(curve), 3)[point])
    summary = RunSummary(
        initial_pass_at_1=start,
        peak_pass_at_1=float(smoothed[point]),
        peak_tolerance=0.02,
        gain=float(smoothed[point]) - start,
        gain_detected=True,
        time_to_peak_step=10.0 * peak,
        time_to_peak_rollouts=320.0 * peak,
        time_to_peak_tokens=3200.0 * peak,
        time_to_peak_seconds=5.0 * peak,
        still_rising=point == len(smoothed) - 1,
        final_entropy=0.5,
        final_pass_at_k={1: float(curve[-1]), 2: float(curve[-1] + 0.1), 8: k8},
    )
    steps = np.arange(len(curve)) * 10
    return CellRun(
        label=label,
        task=task,
        model="tiny",
        seed=seed,
        run_id=f"{label}-{seed}",
        summary=summary,
        eval_steps=steps,
        pass_at_1=curve,
        sign_balance=np.linspace(-0.2, 0.2, 12),
        mean_difficulty=np.linspace(0.6, 0.4, 12),
    )


def board(runs, labels=("ref", "strong", "same")):
    return Board(suite="t", description="hand-made", reference="ref", labels=list(labels), runs=runs)


def three_estimators():
    runs = []
    for seed in range(5):
        jitter = 0.01 * seed
        runs.append(cell("ref", seed, 0.3, [0.3, 0.35, 0.4 + jitter, 0.42 + jitter, 0.42 + jitter]))
        runs.append(cell("strong", seed, 0.3, [0.3, 0.5, 0.6 + jitter, 0.65 + jitter, 0.66 + jitter]))
        # the reference's curve with its seeds' peaks interleaved with the reference's
        shift = [0.015, -0.005, 0.025, 0.005, 0.035][seed]
        runs.append(cell("same", seed, 0.3, [0.3, 0.35, 0.4 + shift, 0.42 + shift, 0.42 + shift]))
    return board(runs)


def test_ranking_orders_by_peak_and_judges_against_the_reference():
    rows = leaderboard.rank(three_estimators())
    assert [r.label for r in rows][0] == "strong"
    by_label = {r.label: r for r in rows}
    assert by_label["strong"].verdict == "better" and by_label["strong"].improvement == 1.0
    assert by_label["ref"].verdict == "reference" and by_label["ref"].improvement is None
    # peak offsets: ref 0 .01 .02 .03 .04, same .015 -.005 .025 .005 .035: same is above in 2+0+3+1+4 of 25
    assert (
        by_label["same"].improvement == pytest.approx(10 / 25) and by_label["same"].verdict == "within noise"
    )
    # 5 seeds a side, not paired (5 pairs' smallest sign-flip p is 1/16): every strong run above every
    # reference run gives p = 2 / C(10, 5), Holm over the two rows compared: 4 / 252 < 0.05
    assert not by_label["strong"].comparison.paired
    assert by_label["strong"].adjusted_p == pytest.approx(4 / 252)
    assert by_label["strong"].tier == 1 and by_label["ref"].tier == by_label["same"].tier == 2
    for row in rows:
        assert row.peak.low <= row.peak.value <= row.peak.high
        assert row.seeds == 5


def test_two_seeds_get_no_verdict_however_far_apart():
    """The bootstrap interval of P(> ref) is [1, 1] for 2 separated seeds a side; the verdict is not."""
    runs = [cell("ref", s, 0.3, [0.3, 0.35, 0.4 + 0.01 * s]) for s in range(2)]
    runs += [cell("strong", s, 0.3, [0.3, 0.5, 0.6 + 0.01 * s]) for s in range(2)]
    rows = {r.label: r for r in leaderboard.rank(board(runs, labels=("ref", "strong")))}
    assert rows["strong"].improvement_ci == (1.0, 1.0)
    assert rows["strong"].verdict == "too few seeds"
    # ... and the page does not print that interval, which would read as certainty
    b = board(runs, labels=("ref", "strong"))
    header, table = report.ranking_table(b, leaderboard.rank(b))
    strong = dict(zip(header, next(t for t in table if t[1] == "strong"), strict=True))
    assert strong["P(> ref) [95% CI]"] == "1.00 (too few seeds for an interval)"
    # the time column counts the runs the runs table marks "(rising)"
    assert strong["time-to-peak (median step)"] == "10 (2/2 timed, 2 rising)"
    # runs that gained but had too few evals to time a peak are "not timed", not "no gain"
    untimed = [
        dataclasses.replace(
            r, summary=dataclasses.replace(r.summary, time_to_peak_step=None, still_rising=False)
        )
        for r in runs
    ]
    short = board(untimed, labels=("ref", "strong"))
    header, table = report.ranking_table(short, leaderboard.rank(short))
    assert next(t for t in table if t[1] == "strong")[header.index("time-to-peak (median step)")] == (
        "not timed (0/2 timed)"
    )


def test_steps_to_threshold_share_the_suite_best_median_peak():
    b = three_estimators()
    refs = leaderboard.reference_peaks(b)
    strong_peaks = [r.summary.peak_pass_at_1 for r in b.of("strong")]
    assert refs[("arithmetic", "tiny")] == pytest.approx(np.median(strong_peaks))
    rows = {r.label: r for r in leaderboard.rank(b)}
    median, reached = rows["strong"].thresholds[0.8]
    # smoothed over complete windows, centred on steps 10, 20, 30: peaks (1.91 + 3j) / 3 for jitter
    # j = 0 .. 0.04, R_ref = their median 0.657, bar 0.3 + 0.8 (0.657 - 0.3) = 0.585; the point
    # centred on step 20, (1.75 + 2j) / 3, crosses it for j >= 0.01, the first seed at step 30
    assert median == 20 and reached == 5
    assert refs[("arithmetic", "tiny")] == pytest.approx((1.91 + 0.06) / 3)
    assert rows["ref"].thresholds[0.8] == (None, 0)  # never gets there: censored, not a number


def test_strata_are_kept_apart():
    runs = [cell("ref", s, 0.3, [0.3, 0.4, 0.5]) for s in range(2)]
    runs += [cell("ref", s, 0.1, [0.1, 0.1, 0.2], task="countdown") for s in range(2)]
    runs += [cell("strong", s, 0.3, [0.3, 0.5, 0.6]) for s in range(2)]
    runs += [cell("strong", s, 0.1, [0.1, 0.2, 0.3], task="countdown") for s in range(2)]
    b = board(runs, labels=("ref", "strong"))
    assert b.strata == [("arithmetic", "tiny"), ("countdown", "tiny")]
    rows = {r.label: r for r in leaderboard.rank(b)}
    # better in both strata: P(improvement) is 1 although countdown's strong runs are below arithmetic's ref
    assert rows["strong"].improvement == 1.0


def test_write_renders_markdown_html_json_and_plots(tmp_path):
    b = three_estimators()
    b.missing = [{"label": "same", "task": "arithmetic", "model": "tiny", "seed": 9}]
    paths = report.write(b, tmp_path / "board")
    page = paths["html"].read_text()
    for label in ("ref", "strong", "same"):
        assert f"<td>{label}</td>" in page
    for png in ("pass_at_1.png", "pass_at_k.png", "accuracy_diversity.png", "sign_difficulty.png"):
        assert (tmp_path / "board" / png).stat().st_size > 10_000
        assert f'src="{png}"' in page and f"]({png})" in paths["markdown"].read_text()
    assert "1 cell(s) have no finished run" in page and "same/arithmetic/tiny/s9" in page
    numbers = json.loads(paths["json"].read_text())["estimators"]
    assert numbers["strong"]["seeds"] == 5
    assert numbers["strong"]["peak_pass_at_1"] == pytest.approx(
        np.mean([r.summary.peak_pass_at_1 for r in b.of("strong")]), abs=1e-6
    )
    markdown = paths["markdown"].read_text()
    assert markdown.index("| 1 | strong |") < markdown.index("| 2 | ")


def test_a_partly_finished_suite_ranks_what_it_has_and_says_what_is_missing(tmp_path):
    """'strong' finished only on countdown, where the reference has no run: ranked, no verdict."""
    runs = [cell("ref", s, 0.3, [0.3, 0.35, 0.4 + 0.01 * s]) for s in range(5)]
    runs += [cell("same", s, 0.3, [0.3, 0.35, 0.4 + 0.01 * s]) for s in range(5)]
    runs += [cell("same", s, 0.3, [0.3, 0.36, 0.41], task="countdown") for s in range(3)]
    runs += [cell("strong", s, 0.3, [0.3, 0.5, 0.6], task="countdown") for s in range(3)]
    b = board(runs)
    rows = {r.label: r for r in leaderboard.rank(b)}
    assert rows["strong"].verdict == "no shared stratum" and rows["strong"].improvement is None
    assert rows["same"].verdict == "within noise"  # compared on arithmetic, the stratum both have
    assert leaderboard.missing_strata(b) == {
        "ref": [("countdown", "tiny")],
        "strong": [("arithmetic", "tiny")],
    }
    page = report.write(b, tmp_path / "board")["html"].read_text()
    assert "strong has no finished run on arithmetic/tiny" in page
    assert "ref has no finished run on countdown/tiny" in page


def test_a_nan_in_an_eval_curve_is_a_clear_error_naming_the_run():
    runs = [cell("ref", s, 0.3, [0.3, 0.35, 0.4]) for s in range(2)]
    runs.append(cell("strong", 1, 0.3, [0.3, float("nan"), 0.6]))
    with pytest.raises(
        leaderboard.NonFiniteCurve, match=r"run strong-1 \(strong, arithmetic/tiny, seed 1\).*step\(s\) 10"
    ):
        leaderboard.rank(board(runs, labels=("ref", "strong")))


def test_an_empty_board_is_an_error(tmp_path):
    with pytest.raises(LookupError, match="no finished runs"):
        report.write(board([]), tmp_path)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt install chromium)")
def test_the_page_renders_in_headless_chromium(tmp_path):
    """Chromium loads the page and its four plots: the rendered DOM has them all with their sizes."""
    paths = report.write(three_estimators(), tmp_path / "board")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    # Each plot reports its loaded natural width into the DOM, which --dump-dom prints after load.
    probe = tmp_path / "board" / "probe.html"
    probe.write_text(
        paths["html"]
        .read_text()
        .replace(
            "</body>",
            "<script>window.addEventListener('load', () => document.body.setAttribute('data-widths',"
            " [...document.images].map(i => i.naturalWidth).join(',')));</script></body>",
        )
    )
    dom = subprocess.run(
        [CHROMIUM, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    widths = [int(w) for w in dom.split('data-widths="')[1].split('"')[0].split(",")]
    assert len(widths) == 4 and min(widths) > 500, widths
    assert "<td>strong</td>" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, *flags, "--window-size=1280,2400", f"--screenshot={shot}", paths["html"].as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert shot.stat().st_size > 50_000


def test_a_page_of_overridden_runs_says_so(tmp_path):
    """`advbench suite gpu-50m trainer.steps=10`: the description's '150 steps' is not what ran."""
    command = "advbench suite gpu-50m trainer.steps=10 'eval.every=5' --ray auto tracking.uri=sqlite:///x.db"
    overrides = leaderboard.command_overrides(command)
    assert overrides == ["trainer.steps=10", "eval.every=5", "tracking.uri=sqlite:///x.db"]
    assert leaderboard.command_overrides("advbench suite smoke") == []
    b = three_estimators()
    b.overrides = overrides
    page = report.write(b, tmp_path / "board")["markdown"].read_text()
    assert "Run with overrides on every cell: trainer.steps=10 eval.every=5" in page
    assert (
        "Run with overrides"
        not in report.write(three_estimators(), tmp_path / "plain")["markdown"].read_text()
    )


def test_verl_runs_are_read_through_the_mapping_and_the_page_names_what_they_cannot_fill(tmp_path):
    """MLflow runs as verl's logger writes them ("@" as "_at_", params flattened with "/"), read by
    `advbench leaderboard EXPERIMENT --runs`."""
    from advbench.harness.config import TrackingConfig
    from advbench.harness.tracking import Tracker

    cfg = TrackingConfig(
        uri=f"sqlite:///{tmp_path}/verl.db", experiment="verl-runs", artifact_root=str(tmp_path)
    )
    tracker = Tracker(cfg)
    client = tracker.client
    curves = {"fade": [0.20, 0.30, 0.42, 0.45, 0.44], "grpo": [0.20, 0.25, 0.30, 0.31, 0.30]}
    for estimator, curve in curves.items():
        for seed in (0, 1, "None"):
            run_id = client.create_run(tracker.experiment_id).info.run_id
            params = {"algorithm/adv_estimator": f"advbench_{estimator}", "data/seed": seed}
            params["actor_rollout_ref/model/path"] = "/models/qwen2.5-1.5b"
            params["actor_rollout_ref/actor/policy_loss/loss_mode"] = "advbench_drpo"
            for key, value in params.items():
                client.log_param(run_id, key, value)
            shift = 0.01 * (seed if seed != "None" else 2)
            for step, value in enumerate(curve):
                client.log_metric(
                    run_id, "val-core/advbench/countdown/acc/mean_at_8", value + shift, step=10 * step
                )
                client.log_metric(
                    run_id, "val-core/advbench/countdown/acc/best_at_8/mean", 0.9, step=10 * step
                )
                client.log_metric(run_id, "actor/entropy", 1.0, step=10 * step)
            client.set_terminated(run_id)
    run_id = client.create_run(tracker.experiment_id).info.run_id  # verl without validation: left out
    client.log_param(run_id, "algorithm/adv_estimator", "grpo")
    client.set_terminated(run_id)
    board = leaderboard.collect_trainer_runs(tracker, reference="grpo+drpo")
    assert board.labels == ["fade+drpo", "grpo+drpo"] and len(board.runs) == 6
    fade = board.of("fade+drpo")
    assert [r.seed for r in fade] == [0, 1, 2]  # data.seed unset: numbered after the label's earlier runs
    assert {(r.task, r.model) for r in fade} == {("countdown", "qwen2.5-1.5b")}
    assert fade[0].eval_steps.tolist() == [0, 10, 20, 30, 40]
    # the smoothed peak (window 3): max of the centred means, never the raw maximum
    assert fade[0].summary.peak_pass_at_1 == pytest.approx((0.42 + 0.45 + 0.44) / 3)
    assert fade[0].summary.initial_pass_at_1 == pytest.approx(0.20)
    rows = leaderboard.rank(board)
    header, table = report.ranking_table(board, rows)
    values = dict(zip(header, table[0], strict=True))
    assert values["time-to-peak (median step)"] == "n/a" and values["entropy"] == "n/a"
    assert values["final pass@1"] != "n/a" and values["peak pass@1 IQM [95% CI]"] != "n/a"
    paths = report.write(board, tmp_path / "page", rows)
    text = paths["markdown"].read_text()
    assert "Columns these runs cannot fill (n/a): gain over start: it is cross-fitted" in text
    assert "verl logs no per-prompt counts" in text
    numbers = json.loads(paths["json"].read_text())["estimators"]["fade+drpo"]
    assert numbers["gain"] is None and numbers["time_to_peak_step"] is None
    assert numbers["peak_pass_at_1"] > 0.4


def test_a_page_says_how_its_runs_ended_and_when_its_budget_censors_time_to_peak(tmp_path):
    """80% of runs turned: the counts only; fewer: the page says time-to-peak is censored."""
    turned = [cell("ref", s, 0.3, [0.3, 0.4, 0.5, 0.5, 0.45, 0.4]) for s in range(4)]
    rising = cell("same", 0, 0.3, [0.3, 0.35, 0.4, 0.45, 0.5])
    assert not any(r.summary.still_rising for r in turned) and rising.summary.still_rising
    (enough,) = report.budget_note([*turned, rising, turned[0]])  # a run two suites share counts once
    assert enough.startswith("Budget: of the 5 distinct runs, 4 (80%) reached a peak that turned, 1 (20%)")
    assert "censored" not in enough
    flat = cell("same", 1, 0.3, [0.3, 0.3, 0.3])
    flat.summary = dataclasses.replace(flat.summary, gain_detected=False, still_rising=False)
    (short,) = report.budget_note([*turned, rising, flat])
    assert "4 (67%) reached a peak that turned, 1 (17%) were still rising" in short
    assert "1 (17%) had no detectable gain" in short and "time-to-peak is censored" in short
    page = report.write(board([*turned, rising, flat]), tmp_path / "board")["markdown"].read_text()
    assert short in page


def test_a_page_names_a_local_store_without_the_machines_absolute_path(tmp_path, monkeypatch):
    from advbench.harness.report import store_label

    monkeypatch.chdir(tmp_path)
    assert store_label(f"sqlite:///{tmp_path}/runs/advbench.db") == "sqlite:///runs/advbench.db"
    assert store_label("sqlite:////elsewhere/dir/advbench.db") == "sqlite:///advbench.db"
    assert store_label("sqlite:///advbench.db") == "sqlite:///advbench.db"  # relative: as given
    assert store_label("http://tracking:5000") == "http://tracking:5000"


def test_an_earlier_lower_peak_is_labelled_not_read_as_faster():
    """Planted arms of known order: 'weak' (a learning rate cut: it barely rises and flattens at
    step 10) against 'ref' (rises to step 30). The weak arm is ranked below and its earlier step of
    peak is labelled 'earlier, lower peak'; 'ref', whose peak is the higher, carries no label; the
    shared bar (80% of R_ref) is reached by ref and not by weak."""
    runs = []
    for seed in range(5):
        jitter = 0.004 * seed
        runs.append(cell("ref", seed, 0.2, [0.2, 0.25, 0.3, 0.33 + jitter, 0.34 + jitter, 0.34 + jitter]))
        runs.append(cell("weak", seed, 0.2, [0.2, 0.22, 0.225 + jitter, 0.22, 0.225, 0.22]))
    b = board(runs, labels=("ref", "weak"))
    rows = {r.label: r for r in leaderboard.rank(b)}
    assert rows["weak"].verdict == "worse"
    assert rows["weak"].time_to_peak[0] < rows["ref"].time_to_peak[0]  # the trap: "faster"
    header, table = report.ranking_table(b, leaderboard.rank(b))
    cells = {t[1]: dict(zip(header, t, strict=True)) for t in table}
    assert cells["weak"]["time-to-peak (median step)"].endswith(", earlier, lower peak")
    assert "lower peak" not in cells["ref"]["time-to-peak (median step)"]
    assert cells["ref"]["steps to 80% of R_ref"].startswith("30 (5/5")
    assert cells["weak"]["steps to 80% of R_ref"].startswith("censored (0/5")


def test_the_tolerance_shrinks_with_a_small_gain():
    """A run that rises by 0.03 over ten evals (noise-free counts, so the paired standard error is
    0) is timed near its end, not at its start for being within delta_abs = 0.02 of its peak; a
    run with a large gain keeps the delta_abs floor."""
    from advbench.harness.metrics import time_to_peak

    small = [[int(1000 * (0.2 + 0.003 * i))] * 64 for i in range(11)]
    slow = time_to_peak(small, 1000, window=1)
    assert slow.detected and slow.tolerance == pytest.approx(0.25 * (slow.peak - slow.start))
    assert slow.index >= 8
    large = [[int(1000 * (0.2 + 0.03 * i))] * 64 for i in range(11)]
    fast = time_to_peak(large, 1000, window=1)
    assert fast.tolerance == pytest.approx(0.02) and fast.index == 10
