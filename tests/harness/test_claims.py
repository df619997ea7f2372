"""Claims: the claims file's checks, the verdicts on boards built by hand, the page, calibration.

The MLflow path end to end (`advbench claims` running a claim's suite) is .ci/run's claims smoke.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from advbench.harness import claims, report
from advbench.harness.claims import Claim, Predicate, evaluate, load_claims
from advbench.harness.cli import main
from advbench.harness.config import ConfigError, config_hash
from advbench.harness.leaderboard import Board
from advbench.harness.suites import Suite, load_suite
from tests.harness.test_leaderboard import cell

# ---------------------------------------------------------------------------------------------
# the shipped claims file


def test_the_seed_claims_load_and_share_their_cells():
    declared = load_claims("seeds")
    assert [c.key for c in declared.claims] == [
        "sign-axis",
        "difficulty-axis",
        "fade-headline",
        "gradient-rank",
        "mismatch-stability",
    ]
    for claim in declared.claims:
        seeds = {cfg.seed for cfg in claim.suite.cells}
        tasks = {cfg.task.name for cfg in claim.suite.cells}
        assert len(seeds) >= 5 and tasks == {"arithmetic", "countdown"}, claim.key
        assert {cfg.tracking.experiment for cfg in claim.suite.cells} == {"claims"}
    hashes = [{config_hash(cfg) for cfg in claim.suite.cells} for claim in declared.claims]
    # GRPO's 10 cells serve claims a, b, c and d: 140 cells declared, 110 to run
    assert sum(map(len, hashes)) == 140 and len(set().union(*hashes)) == 110


def test_the_50m_claims_tune_every_arm_once_on_unscored_seeds():
    declared = load_claims("seeds-50m")
    assert [c.key for c in declared.claims] == [
        "sign-axis",
        "difficulty-axis",
        "fade-headline",
        "mismatch-stability",
    ]
    assert declared.lr_grid.rates == [5e-5, 1e-4, 2e-4] and declared.lr_grid.seeds == [100, 101]
    scored = {config_hash(cfg) for claim in declared.claims for cfg in claim.suite.cells}
    assert len(scored) == 72  # 9 arms (GRPO shared by a, b, c) x 8 seeds
    tuning = claims.tuning_cells(declared)
    assert len(tuning) == 9 * 3 * 2 and not scored & {config_hash(cfg) for cfg in tuning}
    assert {cfg.seed for cfg in tuning} == {100, 101} and all(cfg.trainer.packed for cfg in tuning)


def test_only_and_seeds_reduce_the_run():
    # trainer.group_size=4 would make claim-rank's variants one config; only the chosen claim expands
    declared = load_claims(
        "seeds", ["trainer.steps=7", "trainer.group_size=4"], only=["fade-headline"], seeds=2
    )
    (claim,) = declared.claims
    assert len(claim.suite.cells) == 2 * 2 * 2  # estimators x tasks x seeds
    assert {cfg.trainer.steps for cfg in claim.suite.cells} == {7}


# ---------------------------------------------------------------------------------------------
# bad input: refused before anything runs, naming the key and the choices

GOOD = {"metric": "peak_pass_at_1", "of": "fade", "is": "greater", "than": "grpo"}


def claims_file(tmp_path: Path, predicate: dict | None = None, claim_extra: dict | None = None) -> Path:
    import yaml

    claim = {"suite": "claim-fade", "predicates": [predicate or GOOD], **(claim_extra or {})}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"name": "mine", "claims": {"c1": claim}}))
    return path


@pytest.mark.parametrize(
    ("predicate", "extra", "message"),
    [
        ({**GOOD, "metric": "bogus"}, None, "metric: unknown metric 'bogus'; choices: peak_pass_at_1, gain"),
        (
            {**GOOD, "of": "ppo"},
            None,
            "of: 'ppo' is not an estimator of the claim's suite; choices: grpo, fade",
        ),
        ({**GOOD, "than": "rloo"}, None, "than: 'rloo' is not an estimator of the claim's suite"),
        ({**GOOD, "is": "bigger"}, None, "is: unknown comparison 'bigger'; choices: greater, less, not_less"),
        ({**GOOD, "by": 2}, None, "unknown key(s) by; valid keys: metric, of, is"),
        ({k: v for k, v in GOOD.items() if k != "is"}, None, "'is' is required"),
        ({**GOOD, "value": 0.1}, None, "takes exactly one of 'than' (a label) or 'value'"),
        ({**GOOD, "margin": 0.1}, None, "margin: a margin >= 0 goes with 'is: not_less'"),
        ({**GOOD, "is": "within"}, None, "'is: within' takes range: [lo, hi]"),
        (
            {"metric": "gain", "of": "grpo", "is": "within", "range": [2, 1]},
            None,
            "range: lo must be below hi",
        ),
        (GOOD, {"suit": "x"}, "unknown key(s) suit; valid keys: title, source, statement, suite, predicates"),
        (GOOD, {"suite": "no-such-suite"}, "no suite file 'no-such-suite'"),
    ],
)
def test_a_bad_claims_file_is_refused_naming_the_key_and_the_choices(tmp_path, predicate, extra, message):
    with pytest.raises(ConfigError) as error:
        load_claims(claims_file(tmp_path, predicate, extra))
    assert message in str(error.value)


def test_an_unknown_claim_in_only_names_the_claims(tmp_path):
    with pytest.raises(ConfigError, match=r"--only: no claim 'c2'; claims: c1"):
        load_claims(claims_file(tmp_path), only=["c2"])


def test_the_cli_refuses_a_bad_claims_file_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = claims_file(tmp_path, {**GOOD, "metric": "pass_at_one"})
    assert main(["claims", str(path), f"tracking.uri=sqlite:///{tmp_path}/never.db"]) == 2
    assert "unknown metric 'pass_at_one'; choices:" in capsys.readouterr().err
    assert not (tmp_path / "never.db").exists() and not (tmp_path / "leaderboards").exists()


def test_the_cli_lists_the_metrics(capsys):
    assert main(["claims", "--metrics"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in claims.METRICS)


# ---------------------------------------------------------------------------------------------
# verdicts on boards built by hand


def hand_suite(labels) -> Suite:
    return Suite("hand", Path("hand.yaml"), "hand-made", labels[0], [], [])


def hand_board(labels=("ref", "strong", "same")) -> Board:
    """5 seeds x 2 tasks: 'strong' peaks ~0.2 above 'ref', 'same' is 'ref' with other noise."""
    rng = np.random.default_rng(0)
    runs = []
    for task in ("arithmetic", "countdown"):
        for seed in range(5):
            base = 0.4 + 0.02 * rng.standard_normal()
            runs.append(cell("ref", seed, 0.3, [0.3, 0.35, base, base, base], task=task))
            top = base + 0.2 + 0.02 * rng.standard_normal()
            runs.append(cell("strong", seed, 0.3, [0.3, 0.5, top, top, top], task=task))
            other = 0.4 + 0.02 * rng.standard_normal()
            runs.append(cell("same", seed, 0.3, [0.3, 0.35, other, other, other], task=task))
    return Board(suite="hand", description="", reference="ref", labels=list(labels), runs=runs)


def fake_history(values: dict[str, dict[str, np.ndarray]]):
    """A History from {run_id: {key: values}}; key '' lists the run's keys."""

    def history(run, key):
        logged = values.get(run.run_id, {})
        if key == "":
            return list(logged)
        return np.arange(len(logged[key])), np.asarray(logged[key], dtype=float)

    return history


def judge(*predicates: Predicate, board: Board | None = None, history=None):
    board = board or hand_board()
    claim = Claim("c", "a claim", "", "", hand_suite(board.labels), list(predicates))
    return evaluate(claim, board, history or fake_history({}))


def test_a_clear_difference_holds_and_its_opposite_is_contradicted():
    holds = judge(Predicate("peak_pass_at_1", "strong", "greater", than="ref"))
    (test,) = holds.tests
    assert holds.verdict == "holds" and test.outcome == "holds"
    assert test.comparison.paired and test.comparison.p_value == pytest.approx(2 / 2**10)
    assert 0.15 < test.effect < 0.25 and test.interval[0] < test.effect < test.interval[1]
    assert set(test.per_stratum) == {"arithmetic/tiny", "countdown/tiny"}
    assert np.isfinite(test.comparison.detectable) and test.comparison.detectable < test.effect

    contradicted = judge(Predicate("peak_pass_at_1", "strong", "less", than="ref"))
    assert contradicted.verdict == "contradicted" and contradicted.tests[0].outcome == "contradicted"


def test_no_difference_is_inconclusive():
    result = judge(Predicate("peak_pass_at_1", "same", "greater", than="ref"))
    assert result.verdict == "inconclusive" and result.tests[0].outcome == "inconclusive"


def test_a_claim_holds_only_when_every_test_holds():
    result = judge(
        Predicate("peak_pass_at_1", "strong", "greater", than="ref"),
        Predicate("peak_pass_at_1", "same", "greater", than="ref"),
    )
    assert [t.outcome for t in result.tests] == ["holds", "inconclusive"]
    assert result.verdict == "inconclusive"


def test_non_inferiority_uses_the_margin_both_ways():
    # 'same' is within noise of 'ref': no lower by more than 0.1 holds, by more than 0 cannot be shown
    assert judge(Predicate("peak_pass_at_1", "same", "not_less", than="ref", margin=0.1)).verdict == "holds"
    # 'ref' is ~0.2 below 'strong': it is lower than strong - 0.1 (contradicted), not lower than strong - 0.4
    assert judge(Predicate("peak_pass_at_1", "ref", "not_less", than="strong", margin=0.1)).verdict == (
        "contradicted"
    )
    held = judge(Predicate("peak_pass_at_1", "ref", "not_less", than="strong", margin=0.4))
    assert held.verdict == "holds"
    assert held.tests[0].effect == pytest.approx(held.tests[0].comparison.difference - 0.4)
    assert held.tests[0].text() == "peak_pass_at_1(ref) > peak_pass_at_1(strong) - 0.4"


def test_within_a_range_is_two_tests_against_numbers():
    result = judge(Predicate("peak_pass_at_1", "strong", "within", bounds=(0.5, 0.7)))
    assert [t.text() for t in result.tests] == [
        "peak_pass_at_1(strong) > 0.5",
        "peak_pass_at_1(strong) < 0.7",
    ]
    assert result.verdict == "holds"
    assert judge(Predicate("peak_pass_at_1", "ref", "within", bounds=(0.5, 0.7))).verdict == "contradicted"
    assert judge(Predicate("peak_pass_at_1", "ref", "greater", value=0.3)).verdict == "holds"


def test_history_metrics_read_the_logged_curves():
    board = hand_board()
    logged = {}
    for run in board.runs:  # 'strong' loses 60% of its entropy, the others 20%
        end = 0.4 if run.label == "strong" else 0.8
        logged[run.run_id + run.task] = {"eval/entropy": [1.0, 0.9, end]}
        logged[run.run_id + run.task].update(
            {
                "geometry/w1/effective_rank": [2.0, 2.1, 1.9],
                "geometry/w2/effective_rank": [1.8, 2.0, 2.2],
                "geometry/w1/near_zero_fraction": [0.1, 0.2, 0.3],
            }
        )
    for run in board.runs:
        run.run_id = run.run_id + run.task
    history = fake_history(logged)
    strong = next(r for r in board.runs if r.label == "strong")
    assert claims.METRICS["entropy_drop"].value(strong, history) == pytest.approx(0.6)
    assert claims.METRICS["effective_rank"].value(strong, history) == pytest.approx(2.0)
    assert claims.METRICS["sparsity_growth"].value(strong, history) == pytest.approx(0.2)
    result = judge(Predicate("entropy_drop", "strong", "greater", than="ref"), board=board, history=history)
    assert result.verdict == "holds"


def test_drawdown_and_time_to_peak():
    falling = cell("x", 0, 0.3, [0.3, 0.5, 0.6, 0.4, 0.3, 0.3])
    assert claims.METRICS["drawdown"].value(falling, None) == pytest.approx(0.5 - 0.3333333, abs=1e-6)
    assert claims.METRICS["time_to_peak"].value(falling, None) == falling.summary.time_to_peak_step
    falling.summary.time_to_peak_step = None  # no detectable gain: counted at the last eval
    assert claims.METRICS["time_to_peak"].value(falling, None) == 50


def test_a_label_without_runs_leaves_the_claim_inconclusive():
    board = hand_board(labels=("ref", "strong", "same", "absent"))
    result = judge(
        Predicate("peak_pass_at_1", "strong", "greater", than="ref"),
        Predicate("peak_pass_at_1", "absent", "greater", than="ref"),
        board=board,
    )
    assert result.missing == ["absent"] and result.verdict == "inconclusive"


def test_null_claims_get_a_verdict_at_most_at_the_level():
    """Calibration: 'greater' between two labels with no difference (5 seeds x 2 tasks, paired), and
    against a number equal to the mean. A false 'holds' (one direction) comes out at most at half
    the two-sided 5%, 'holds' and 'contradicted' together at most at 5% (measured, of 400: against
    a label 3 holds and 11 contradicted, against the number 4 and 6)."""
    rng = np.random.default_rng(1)
    trials, verdicts = 400, {"than": [], "value": []}
    for _ in range(trials):
        runs = []
        for task in ("arithmetic", "countdown"):
            for seed in range(5):
                for label in ("a", "b"):
                    p = 0.4 + 0.03 * rng.standard_normal()
                    runs.append(cell(label, seed, 0.3, [0.3, p, p, p], task=task))
        board = Board(suite="null", description="", reference="a", labels=["a", "b"], runs=runs)
        for key, predicate in (
            ("than", Predicate("peak_pass_at_1", "b", "greater", than="a")),
            ("value", Predicate("peak_pass_at_1", "b", "greater", value=0.4)),
        ):
            verdicts[key].append(judge(predicate, board=board).verdict)
    # binomial(400, 0.025): mean 10, sd 3.1; binomial(400, 0.05): mean 20, sd 4.4 (both ~4 sd of slack)
    for key, outcomes in verdicts.items():
        assert outcomes.count("holds") <= 22, (key, outcomes.count("holds"))
        assert outcomes.count("holds") + outcomes.count("contradicted") <= 38, key


# ---------------------------------------------------------------------------------------------
# the page


def test_the_claims_page_has_every_verdict_effect_interval_and_plot(tmp_path):
    declared = claims.ClaimsFile("hand", Path("hand.yaml"), "hand-made claims", [])
    results = [
        judge(Predicate("peak_pass_at_1", "strong", "greater", than="ref")),
        judge(Predicate("peak_pass_at_1", "strong", "less", than="ref")),
        judge(Predicate("peak_pass_at_1", "same", "within", bounds=(0.35, 0.45))),
    ]
    for key, result in zip(("up", "down", "band"), results, strict=True):
        result.claim = Claim(key, f"claim {key}", "arXiv 0000.00000", "it is so", hand_suite(["ref"]), [])
    paths = report.write_claims(declared, results, tmp_path, command="advbench claims hand")
    markdown = paths["markdown"].read_text()
    for verdict in ("holds", "contradicted"):
        assert f"**Verdict: {verdict}.**" in markdown
    assert "peak_pass_at_1(strong) > peak_pass_at_1(ref)" in markdown and "detectable effect" in markdown
    assert "[+0." in markdown  # an effect's interval
    assert "Budget: of the 15 distinct runs" in markdown  # by run id: the hand-made ids repeat per task
    page = json.loads(paths["json"].read_text())
    assert [c["verdict"] for c in page["claims"]] == ["holds", "contradicted", "holds"]
    assert all((tmp_path / f"{key}.png").stat().st_size > 10_000 for key in ("up", "down", "band"))
    assert (tmp_path / "up" / "index.html").is_file()  # each claim's suite leaderboard
    assert 'class="contradicted"' in paths["html"].read_text()


def test_a_claim_on_a_quantity_the_paper_does_not_define_is_not_comparable(tmp_path):
    """Tests that contradict our own operationalisation do not contradict the paper: the verdict is
    "not comparable" with its reason, and what the tests say of our measurement stays on the page."""
    result = judge(Predicate("peak_pass_at_1", "strong", "less", than="ref"))
    assert result.verdict == "contradicted"
    result.claim = Claim(
        "rank",
        "(d) rank",
        "arXiv 0000.00000",
        "it is so",
        hand_suite(["ref"]),
        [],
        "its matrix is not public",
    )
    assert result.verdict == "not comparable" and result.tests_verdict == "contradicted"
    declared = claims.ClaimsFile("hand", Path("hand.yaml"), "hand-made claims", [])
    paths = report.write_claims(declared, [result], tmp_path, command="advbench claims hand")
    markdown = paths["markdown"].read_text()
    assert "**Verdict: not comparable: its matrix is not public. On our own operationalisation" in markdown
    assert "the tests say: contradicted.**" in markdown
    assert 'class="not-comparable"' in paths["html"].read_text()
    (entry,) = json.loads(paths["json"].read_text())["claims"]
    assert entry["verdict"] == "not comparable" and entry["tests_verdict"] == "contradicted"
    shipped = load_claims("seeds", only=["gradient-rank"]).claims[0]
    assert "not public" in shipped.not_comparable


def test_an_earlier_lower_peak_does_not_hold_as_faster():
    """'weak' peaks earlier than 'ref' but detectably lower: "weak peaks earlier" does not hold
    (its outcome says why); 'fast' peaks earlier at the same height: it holds."""
    rng = np.random.default_rng(1)
    runs = []
    for task in ("arithmetic", "countdown"):
        for seed in range(5):
            top = 0.34 + 0.004 * rng.standard_normal()
            runs.append(cell("ref", seed, 0.2, [0.2, 0.25, 0.3, 0.33, top, top], task=task))
            runs.append(cell("weak", seed, 0.2, [0.2, 0.22, 0.226, 0.22, 0.22, 0.22], task=task))
            runs.append(cell("fast", seed, 0.2, [0.2, 0.34, top, 0.33, 0.33, 0.33], task=task))
    b = Board(suite="hand", description="", reference="ref", labels=["ref", "weak", "fast"], runs=runs)
    weak = judge(Predicate("time_to_peak", "weak", "less", than="ref"), board=b)
    (test,) = weak.tests
    assert test.comparison.p_value < 0.05 and test.lower_peak
    assert test.outcome == "earlier, lower: not faster" and not test.holds and weak.verdict == "inconclusive"
    fast = judge(Predicate("time_to_peak", "fast", "less", than="ref"), board=b)
    assert fast.verdict == "holds" and not fast.tests[0].lower_peak


def test_the_claim_suites_are_suites():
    for name in ("claim-sign", "claim-difficulty", "claim-fade", "claim-rank", "claim-mismatch"):
        assert load_suite(name).reference in load_suite(name).labels


@pytest.mark.slow
def test_an_lr_grid_tunes_each_arm_on_unscored_seeds_and_the_page_says_which_rate(fast_overrides, tmp_path):
    """`advbench claims` with an lr_grid (claim-fade's two arms, two rates, one tuning seed, packed):
    the tuning runs train first, each arm's scored runs use its best rate, and the page and
    claims.json say which rate each arm got and the means behind it."""
    import yaml

    from advbench.harness.tracking import Tracker

    path = tmp_path / "tuned.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "tuned",
                "lr_grid": {"rates": [1e-4, 1e-3], "seeds": [50]},
                "claims": {"c1": {"suite": "claim-fade", "predicates": [GOOD]}},
            }
        )
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"claims": {"c1": {"suite": "claim-fade", "predicates": [GOOD]}},
                                   "lr_grid": {"rates": [1e-4], "seeds": [0]}}))  # fmt: skip
    with pytest.raises(ConfigError, match="seeds \\[0\\] are also scored"):
        load_claims(bad, fast_overrides)
    out = tmp_path / "page"
    overrides = list(fast_overrides)
    assert main(["claims", str(path), "--seeds", "2", "--pack", "8", "--out", str(out), *overrides]) == 0
    page = json.loads((out / "claims.json").read_text())
    (claim,) = page["claims"]
    rates = claim["learning_rates"]
    # one arm per estimator and task (claim-fade runs arithmetic and countdown)
    assert set(rates) == {
        f"{label} ({task}, tiny)" for label in ("grpo", "fade") for task in ("arithmetic", "countdown")
    }
    for choice in rates.values():
        assert set(choice["means"]) == {"0.0001", "0.001"} and None not in choice["means"].values()
        best = max(choice["means"], key=lambda lr: (choice["means"][lr], -float(lr)))
        assert choice["lr"] == pytest.approx(float(best))
    assert "Learning rates (the best of the grid per arm" in (out / "claims.md").read_text()
    # the scored runs ran at the chosen rates, packed, and the tuning seed is not among them
    declared = load_claims(path, overrides, seeds=2, pack=8)
    tracker = Tracker(declared.claims[0].suite.cells[0].tracking)
    tuned = claims.with_rates(declared, tracker).claims[0]
    for cfg in tuned.suite.cells:
        assert cfg.trainer.packed and cfg.seed in (0, 1)
        assert cfg.trainer.lr == pytest.approx(rates[f"{cfg.display_label} ({cfg.task.name}, tiny)"]["lr"])
        assert tracker.find_finished(cfg) is not None
