"""``startsim recommend``'s report folder: the ADR parses as Markdown, has the sections a decision
record needs, and every figure it links exists; summary.json carries the decision; impossible
targets exit 2 with a message and write nothing."""

from __future__ import annotations

import json
import re

import pytest
import tomli_w
from builders import REPORT_SMALL, STORM, scenario
from cli_helpers import call_main
from doclinks import problems
from markdown_it import MarkdownIt
from matplotlib.image import imread

# With the team's past timeouts and criterion, so the ADR has verdicts on them to check.
WITH_HISTORY = {
    **REPORT_SMALL,
    "team.timeout_history_s": [4.0, 8.0],
    "team.success_criterion": 0.9,
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    path = root / "small.toml"
    path.write_text(tomli_w.dumps(scenario(WITH_HISTORY).to_dict()), encoding="utf-8")
    out = root / "out"
    args = ["recommend", str(path), "-n", "400", "--jobs", "1", "--svg", "--out", str(out)]
    assert call_main(*args) == 0
    return out


def links(markdown: str) -> tuple[list[str], list[str]]:
    """Image sources and link targets, from the parsed token stream (not a regex)."""
    images, hrefs = [], []
    for token in MarkdownIt("commonmark").enable("table").parse(markdown):
        for child in token.children or []:
            if child.type == "image":
                images.append(child.attrGet("src"))
            elif child.type == "link_open":
                hrefs.append(child.attrGet("href"))
    return images, hrefs


def test_adr_parses_and_every_linked_figure_exists(report):
    text = (report / "adr.md").read_text(encoding="utf-8")
    images, hrefs = links(text)
    # the CDF, the timeline, the heatmap, the restarts, and what each form of breaker does
    assert len(images) == 5 and "breaker-forms.png" in images
    for target in images:
        assert (report / target).is_file(), target
        assert imread(report / target).std() > 0  # a PNG that decodes, not one flat colour
    for png in images:  # SVG on request, next to each PNG
        assert (report / png.replace(".png", ".svg")).is_file()
    assert any("sources.md#" in href for href in hrefs)
    assert problems(text, report) == []  # the citations land on docs/sources.md's entries


def test_figures_drawn_in_worker_processes_are_the_same_files(report, tmp_path):
    """With local worker processes each figure is drawn in one of them: the same bytes as drawn
    one after another in the command's own process."""
    out = tmp_path / "pooled"
    args = ["recommend", str(report.parent / "small.toml"), "-n", "400", "--jobs", "2"]
    assert call_main(*args, "--out", str(out)) == 0
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert len(pngs) == 5
    for name in pngs:
        assert (out / name).read_bytes() == (report / name).read_bytes(), name


def test_adr_has_the_sections_of_a_decision_record(report):
    text = (report / "adr.md").read_text(encoding="utf-8")
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    heads = [
        (t.tag, tokens[i + 1].content) for i, t in enumerate(tokens) if t.type == "heading_open"
    ]
    headings = [text for tag, text in heads if tag in ("h1", "h2")]
    assert headings[0].startswith("ADR: ")
    assert headings[1:5] == ["Context", "Decision", "Options considered", "Consequences"]
    context = [text for tag, text in heads if tag == "h3"][:2]
    assert context == [
        "Start-up success, as the team counts it",
        "What is known and what is assumed",
    ]
    # What is known and what is assumed, in separate lists, with each assumption's value.
    assert "**Assumptions**" in text and "`connector.setup_s` = constant(value 1)" in text
    assert "**Status:** proposed" in text
    assert any(t.type == "table_open" for t in tokens)  # the options table renders as a table
    assert "the least change that meets the target" in text
    assert "sources.md#aws-p999-timeout-rule" in text and "p99.9" in text
    assert "What monitoring shows per deploy" in text


def test_options_table_has_one_row_per_candidate(report):
    data = json.loads((report / "summary.json").read_text(encoding="utf-8"))
    text = (report / "adr.md").read_text(encoding="utf-8")
    options = text.split("## Options considered", 1)[1].split("\n\n", 3)[2]
    rows = [ln for ln in options.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert len(rows) == len(data["candidates"]) >= 3
    for row, cand in zip(rows, data["candidates"], strict=True):
        assert row.startswith(f"| {cand['name']} |")


def test_summary_carries_the_decision_and_the_figures(report):
    data = json.loads((report / "summary.json").read_text(encoding="utf-8"))
    for key in ("verdict", "decision", "timeout", "pool", "connector", "candidates", "figures"):
        assert key in data
    assert data["verdict"]["timeout_helps"] is True
    d = data["decision"]
    assert d["smallest_timeout_s"] > 4.0  # the current 4 s is too short behind a 2–6 s scale-out
    text = (report / "adr.md").read_text(encoding="utf-8")
    assert f"Adopt **{d['configuration']}**" in text
    for change in d["changes"]:  # each adopted change, with why it is needed
        assert f"`{change['field']}` {change['from']} → **{change['to']}**" in text
    assert set(data["figures"]) == {"cdf", "heatmap", "timeline", "restarts", "breakers"}
    assert data["figure_grid"]["vary"]["fleet.instances"] == [1, 2, 3, 4]
    assert (report / "scenario.toml").is_file()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--target-success", "1"], "between 0 and 1"),
        (["--target-success", "0.99999", "-n", "50"], "--target-success 0.99999: 50 replications"),
        (["--confidence", "1.5"], "--confidence 1.5"),
        (["--max-timeout", "0.1"], "--max-timeout 0.1"),
        (["--max-timeout", "0"], "no shorter than the scenario's startup.db_init_timeout_s"),
        (["--max-timeout", "10"], "--max-timeout 10"),
        (["--max-timeout", "inf"], "--max-timeout inf"),
        (["--max-timeout", "1e9"], "horizon_s"),
    ],
)
def test_impossible_targets_exit_2_and_write_nothing(capsys, tmp_path, args, says):
    out = tmp_path / "o"
    assert call_main("recommend", "--jobs", "1", "--out", str(out), *args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert says in err and "Traceback" not in err
    assert not out.exists()


def test_hopeless_scenario_is_answered_not_searched(tmp_path):
    """5 instances × min_size 20 against 10 free slots: no start can ever succeed. The verdict is
    "no timeout helps", the pool fix is simulated, and the report (CDF without a single finished
    init included) is written."""
    path = tmp_path / "hopeless.toml"
    sc = scenario(
        {
            **REPORT_SMALL,
            "fleet.instances": 5,
            "pool.min_size": 20,
            "pool.max_size": 20,
            "pool.held_when_ready": 20,
            "database.max_connections": 13,
        }
    )
    path.write_text(tomli_w.dumps(sc.to_dict()), encoding="utf-8")
    out = tmp_path / "o"
    args = ("--target-success", "0.9", "-n", "60", "--jobs", "1", "--out", str(out))
    assert call_main("recommend", str(path), *args) == 0
    data = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert data["verdict"]["timeout_helps"] is False
    assert f"{sc.database.free_slots} free slots" in data["verdict"]["reason"]
    assert data["fix"]["search"]["timeout_s"] is not None  # the pool fix meets the target
    assert imread(out / "db-init-cdf.png").std() > 0  # drawn (axes, no curve), not empty


def test_a_share_is_never_rounded_to_all_or_none():
    from sim.report.adr import _share

    shares = (0.0, 1.0, 0.5, 0.997, 0.003, 0.99996, 0.00004)
    shown = ["0 %", "100 %", "50 %", "99.7 %", "0.3 %", "> 99.9 %", "< 0.1 %"]
    assert [_share(x) for x in shares] == shown


# -- every claim of the ADR, read beside summary.json ---------------------------------------------

NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?: ?%)?")


def _numbers(data) -> list[float]:
    if isinstance(data, bool):
        return []
    if isinstance(data, int | float):
        return [float(data)]
    if isinstance(data, dict):
        return [x for v in data.values() for x in _numbers(v)]
    if isinstance(data, list):  # a count of what it lists is backed by it too
        return [float(len(data)), *(x for v in data for x in _numbers(v))]
    return []


def _strings(data) -> list[str]:
    if isinstance(data, str):
        return [data]
    if isinstance(data, dict):
        return [x for v in data.values() for x in _strings(v)]
    if isinstance(data, list):
        return [x for v in data for x in _strings(v)]
    return []


def _shown(summary: dict) -> set[str]:
    """Every way the report prints a number of summary.json: as is, rounded, or as a percentage
    of it or of its complement (success = 1 − failure)."""
    out = set()
    for v in _numbers(summary):
        out |= {f"{v:g}", f"{v:.0f}", f"{v:.1f}", f"{v:.2f}", f"{v:.3f}", f"{v:.3g}", f"{v:.4g}"}
        out |= {f"{v:,.0f}", f"{v:.0%}"}
        for x in (v, 1 - v):
            out |= {f"{100 * x:.{d}f} %" for d in range(4)}
    return out


def _claims(adr: str) -> str:
    """The ADR's sentences that state a simulated number or a verdict: today's figures and what
    monitoring shows, start-up success, the Decision, the options and the past timeouts, the pool
    arithmetic, and the verdicts' settlement."""
    context = adr.split("## Context", 1)[1].split("## Decision", 1)[0]
    paragraphs = context.split("\n\n")
    starts = ("What monitoring", "Simulated today", "Without a binding deadline")
    simulated = "\n".join(p for p in paragraphs if p.startswith(starts))
    success = context.split("### Start-up success", 1)[1].split("### What is known", 1)[0]
    decision = adr.split("## Decision", 1)[1].split("## Options considered", 1)[0]
    options = adr.split("## Options considered", 1)[1].split("Timeouts for common targets", 1)[0]
    pool = "\n".join(p for p in adr.split("\n\n") if p.startswith("Pool arithmetic"))
    method = adr.split("## How this was computed", 1)[1].split("\n\n", 2)[2]
    return "\n".join((simulated, success, decision, options, pool, method))


def unbacked(adr: str, summary: dict) -> list[str]:
    """Numbers in the ADR's claims that no value of summary.json prints as; names and reasons
    that summary.json holds as text are taken out first (their digits are its own)."""
    text = _claims(adr)
    for s in sorted(_strings(summary), key=len, reverse=True):
        if len(s) > 2:
            text = text.replace(s, " ")
    text = re.sub(r"`[^`]*`", " ", text)  # field names and the command
    shown = _shown(summary)
    return [m for m in NUMBER.findall(text) if m.strip() not in shown]


def _decision_line(adr: str, field: str, dropped: bool, change: str = "") -> str:
    """The Decision's line of one field, or of the change it belongs to when the change is
    worded by its name (one the team applies in its platform or code: sim.remedies)."""
    decision = adr.split("## Decision", 1)[1].split("## Options considered", 1)[0]
    start = "- Not adopted: " if dropped else "- "
    head = f"{start}**{change}**" if change and not dropped else f"{start}`{field}`"
    return next(ln for ln in decision.splitlines() if ln.startswith(head))


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def check_side_by_side(adr: str, summary: dict) -> None:
    """The ADR says what summary.json holds, claim by claim."""
    assert unbacked(adr, summary) == []
    d = summary["decision"]
    says = {"needed": "Needed:", "not needed": "Not needed:", "too close to call": "Not shown"}
    for dropped, rows in ((False, d["changes"]), (True, d["dropped"])):
        for c in rows:
            named = c["change"] if c.get("apply") else ""
            line = _decision_line(adr, c["field"], dropped, named)
            assert says[c["needed"]] in line, line
            assert named or f"{c['from']} → " in line, line
            if named and not dropped:  # and how to apply it, once, after the list
                assert f"How to apply **{named}**: " in adr
            assert (c["needed"] == "not needed") == dropped
            seq, f = c["without_it_sequential"], c["without_it_p_start_failure"]
            if seq is not None:
                assert f"({c['without_it']})" in line, line
                interval = f"{_pct(seq['confidence'])} interval {_pct(f['ci_low'])} – "
                assert f"{_pct(f['estimate'])}, {interval}{_pct(f['ci_high'])}" in line, line
                assert f"{seq['replications']} replications" in line, line
    options = adr.split("## Options considered", 1)[1]
    for h in summary["history"]:  # each past timeout: its verdict and what it took
        own = h["success"]["by_definition"][h["success"]["definition"]]
        seq = h["success"]["sequential"]
        row = next(ln for ln in options.splitlines() if ln.startswith(f"| {h['timeout_s']:g} s |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1:4] == [
            _pct(own["estimate"]),
            f"{_pct(own['ci_low'])} – {_pct(own['ci_high'])}",
            {"not met": "**not met**"}.get(h["criterion"], h["criterion"]),
        ], row
        assert cells[4].startswith(f"{seq['replications']} (look {seq['look']} of "), row
    method = adr.split("## How this was computed", 1)[1]
    settled = re.search(r"Settled \((\d+);", method).group(1)
    close = re.search(r"Too close to call at the cap \((\d+);", method).group(1)
    records = [c["sequential"] for c in summary["candidates"] if c["sequential"]]
    records += [h["success"]["sequential"] for h in summary["history"]]
    records += [summary["success"]["sequential"]] if summary["success"]["sequential"] else []
    assert int(settled) == sum(r["settled"] for r in records)
    assert int(close) == sum(not r["settled"] for r in records)
    if "robust" in summary:  # options judged across worlds: their shares, row by row
        for c in summary["candidates"]:
            r = c["robust"]
            row = next(ln for ln in options.splitlines() if ln.startswith(f"| {c['name']} |"))
            assert f"| {100 * r['share_meeting']:.0f} % ({r['met']} of {r['worlds']}" in row, row
        adopted = d["configuration"]
        if adopted is not None:
            r = next(c for c in summary["candidates"] if c["name"] == adopted)["robust"]
            held = f"**{adopted}** holds: it meets the target in {r['met']} of {r['worlds']} worlds"
            assert held in adr.split("## Options considered", 1)[0]
    m = summary["monitoring"]["startup_failures_per_deploy"]  # the share of deploys
    share = adr_share(m["deploys_with_any"])
    assert f"{share} of deploys see at least one failed start" in adr


def adr_share(x: float) -> str:
    from sim.report.adr import _share

    return _share(x)


def test_every_claim_of_the_adr_is_a_value_of_summary_json(report):
    adr = (report / "adr.md").read_text(encoding="utf-8")
    summary = json.loads((report / "summary.json").read_text(encoding="utf-8"))
    assert summary["history"] and summary["decision"]["changes"]
    check_side_by_side(adr, summary)
    # The check has teeth: a number the data does not hold is caught.
    assert unbacked(adr.replace("## Decision\n", "## Decision\n\n12.34 % of nothing.\n"), summary)


def test_a_field_not_needed_is_dropped_and_said_so():
    """STORM (tests/builders.py): the pool fix sets min_size 1, max_size 2 and held_when_ready 2;
    without max_size the rest still meets the target, so the ADR drops it and says why, with the
    figures summary.json holds; without held_when_ready the ready fleet no longer fits."""
    from sim.recommend import Settings, recommend
    from sim.report.adr import render
    from sim.report.view import RecommendationView

    sc = scenario(STORM)
    rec = recommend(sc, Settings(target_success=0.99, replications=400, seed=1))
    summary = json.loads(json.dumps(rec.as_dict()))
    adr = render(RecommendationView.from_dict(summary), sc, {}, "startsim recommend", "today")
    d = summary["decision"]
    assert [(c["field"], c["needed"]) for c in d["dropped"]] == [("pool.max_size", "not needed")]
    assert "Not adopted: `pool.max_size` 10 → 2. Not needed: without it" in adr
    line = _decision_line(adr, "pool.held_when_ready", dropped=False)
    assert "Needed: without it (pool.min_size 1) the ready fleet's connections exceed" in line
    check_side_by_side(adr, summary)


def test_the_example_adr_states_only_what_its_summary_holds():
    """results/example (the default scenario, with the team's history and observed failures)."""
    from pathlib import Path

    example = Path(__file__).parent.parent / "results" / "example"
    adr = (example / "adr.md").read_text(encoding="utf-8")
    summary = json.loads((example / "summary.json").read_text(encoding="utf-8"))
    assert summary["history"] and summary["observed_failures"]
    check_side_by_side(adr, summary)
