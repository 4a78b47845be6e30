"""Browse and compare, proven: a real study, real servers, headless Chromium, and the APIs.

One small study is made with `mnist-study run` and its defaults, with four planted trials so
every state shows: two COMPLETE, one PRUNED (successive halving), one FAIL (diverged). Then
`mnist-study dashboard` and `mnist-study ui` serve it, with no store flags, on free ports.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import mlflow.pyfunc
import optuna
import pytest
import torch
from mlflow import MlflowClient
from optuna.trial import FrozenTrial

from data_pipeline import Normalizer, find_mnist, prepare_search_data, to_tensor_set
from study.search.search_space import hyperparams_from_params
from study.train.training import evaluate
from tests.helpers import (
    CLASSIC_SPACE,
    STUDY_TRAIN_IMAGES,
    cli_env,
    free_port,
    import_or_skip,
    unavailable,
)
from tests.servers import CliServer, start_cli_server
from tests.synthetic import write_synthetic_mnist

# Each test here runs a study in a process, a server or a benchmark: seconds to minutes.
pytestmark = pytest.mark.slow

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

# Imported so that a missing playwright skips this module (fails it under CI) at collection.
_sync_api = import_or_skip("playwright.sync_api", install='pip install -e ".[test]"')
expect, sync_playwright = _sync_api.expect, _sync_api.sync_playwright

REPO = Path(__file__).resolve().parents[3]
SCREENSHOTS = REPO / "test-artifacts"  # git-ignored; the README's copies live in docs/
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
STORAGE = "optuna.db"  # `mnist-study run`'s default, relative to the working directory
TRACKING = "mlflow/mlflow.db"
MODEL_NAME = "mnist-study-mnist"
_BASE = {"scheduler": "none", "dropout": 0.0, "weight_decay": 1e-6}
PLANTED = [
    # Batch sizes as the study stores them: labels that sort by size ("0032" ... "1024").
    {**_BASE, "optimizer": "sgd", "lr": 1e-3, "sgd_momentum": 0.8, "batch_size": "0256"},  # slow
    {**_BASE, "optimizer": "adam", "lr": 3e-3, "batch_size": "0032"},  # good: beats trial 0
    {**_BASE, "optimizer": "sgd", "lr": 1e-4, "sgd_momentum": 0.8, "batch_size": "1024"},  # pruned
    {**_BASE, "optimizer": "sgd", "lr": 1e3, "sgd_momentum": 0.9, "batch_size": "0032"},  # diverges
]


@dataclass(frozen=True)
class MadeStudy:
    root: Path
    data: Path
    stdout: str

    def trials(self) -> list[FrozenTrial]:
        return optuna.load_study(study_name="mnist",
                                 storage=f"sqlite:///{self.root / STORAGE}").trials

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / TRACKING}"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> MadeStudy:
    root = tmp_path_factory.mktemp("browse")
    data = write_synthetic_mnist(root / "data", n_train=STUDY_TRAIN_IMAGES)
    study = optuna.create_study(storage=f"sqlite:///{root / STORAGE}", study_name="mnist",
                                direction="minimize")
    for params in PLANTED:  # `run` takes enqueued trials first
        study.enqueue_trial(params, skip_if_exists=False)
    config = root / "classic.toml"  # the space the planted trials are written in
    config.write_text("[search_space]\n" + "".join(
        f"{key} = {json.dumps(value)}\n" for key, value in CLASSIC_SPACE.as_dict().items()))
    result = subprocess.run(
        [sys.executable, "-m", "study", "run", "--n-trials", "4", "--max-epochs", "3",
         "--config", str(config),
         "--pruner", "sha", "--hidden", "16", "--val-fraction", "0.25", "--no-progress",
         "--allow-noncanonical-data"],  # no --storage/--tracking-uri: the defaults
        cwd=root, env={**cli_env(), "MNIST_STUDY_DATA_DIR": str(data)},
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    made = MadeStudy(root=root, data=data, stdout=result.stdout)
    states = [t.state.name for t in made.trials()]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL"]  # every state is on show
    return made


def _serve(request: pytest.FixtureRequest, made: MadeStudy, *args: str) -> CliServer:
    server = start_cli_server(made.root, *args)
    request.addfinalizer(server.stop)  # registered first: stopped even if start-up fails
    return server


@pytest.fixture(scope="module")
def dashboard(request: pytest.FixtureRequest, made: MadeStudy) -> str:
    port = free_port()
    server = _serve(request, made, "dashboard", "--port", str(port))  # default storage
    return server.wait_for(rf"open (http://127\.0\.0\.1:{port}/)").group(1)


@dataclass(frozen=True)
class MlflowUi:
    url: str
    runs_link: str  # the study's experiment, runs table


@pytest.fixture(scope="module")
def mlflow_ui(request: pytest.FixtureRequest, made: MadeStudy) -> MlflowUi:
    port = free_port()
    server = _serve(request, made, "ui", "--port", str(port))  # default tracking store
    link = server.wait_for(r"study mnist: (\S+)").group(1)
    ready = server.wait_for(r"mlflow server pid (\d+)\): open (\S+)")
    server.extra_groups.append(int(ready.group(1)))
    return MlflowUi(url=ready.group(2), runs_link=link)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} not found: apt-get install chromium (as .ci/run does)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    # A person closes MLflow's assistant side panel once; the UI keeps that in localStorage.
    context.add_init_script("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
                            "localStorage.setItem("
                            "'mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');")
    context.set_default_timeout(60_000)  # a cold UI on two busy cores
    expect.set_options(timeout=60_000)
    page = context.new_page()
    yield page
    context.close()


def _shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as reply:
        return json.load(reply)


# --- optuna-dashboard -------------------------------------------------------------------------

@pytest.mark.browser
def test_dashboard_shows_the_study_its_curves_and_its_trials(
    made: MadeStudy, dashboard: str, page: Page
) -> None:
    page.goto(dashboard + "dashboard")
    card = page.get_by_text(re.compile(r"^\d+\. mnist$"))
    expect(card).to_be_visible()  # the study a bare `run` made, found with no flags
    expect(page.get_by_text("Direction: MINIMIZE")).to_be_visible()
    card.click()
    expect(page.get_by_text("Intermediate values", exact=True)).to_be_visible()
    expect(page.get_by_text("val_loss").first).to_be_visible()  # the objective's name
    for trial in (0, 1, 2):  # learning curves; the pruned trial's stops at the rung, epoch 2
        expect(page.get_by_text(f"trial #{trial}", exact=True).first).to_be_visible()
    expect(page.get_by_text("Study User Attributes")).to_be_visible()
    expect(page.get_by_text("identity.seed", exact=True)).to_be_visible()  # short, readable
    # The card shows 5 attributes at a time: all of them, please.
    page.get_by_role("combobox", name="rows per page").first.select_option(label="All")
    expect(page.get_by_text("data_fingerprint", exact=True)).to_be_visible()
    _shot(page, "dashboard-study.png")

    page.goto(page.url.rstrip("/") + "/trials")
    expect(page.get_by_text("4 Trials")).to_be_visible()  # every trial, whatever its state
    expect(page.get_by_text("Pruned", exact=True).first).to_be_visible()
    expect(page.get_by_text("Fail", exact=True).first).to_be_visible()
    page.get_by_text("Trial 1", exact=True).first.click()
    best = made.trials()[1]
    expect(page.get_by_text(best.user_attrs["mlflow_run_id"])).to_be_visible()  # MLflow link
    expect(page.get_by_text(re.compile(r"^diagnosis converging: "))).to_be_visible()
    expect(page.get_by_text("optimizer adam", exact=True)).to_be_visible()  # its parameters
    _shot(page, "dashboard-trials.png")


def test_dashboard_api_matches_the_optuna_storage(made: MadeStudy, dashboard: str) -> None:
    summaries = _get_json(dashboard + "api/studies")["study_summaries"]
    assert [s["study_name"] for s in summaries] == ["mnist"]
    detail = _get_json(f"{dashboard}api/studies/{summaries[0]['study_id']}?after=0")
    assert detail["objective_names"] == ["val_loss"]  # set_metric_names reaches the dashboard
    shown = {t["number"]: t for t in detail["trials"]}
    stored = made.trials()
    assert sorted(shown) == [t.number for t in stored]  # every trial present
    for trial in stored:
        row = shown[trial.number]
        assert row["state"].upper() == trial.state.name
        # Exact: the same floats, not rounded. Pruned and failed trials have no value at all.
        assert row.get("values") == trial.values
        assert {i["step"]: i["value"] for i in row["intermediate_values"]} == \
            trial.intermediate_values
        assert {p["name"]: p["param_external_value"] for p in row["params"]} == \
            {k: str(v) for k, v in trial.params.items()}
        # Run id, best epoch, diagnosis, findings; the dashboard shows a list as JSON.
        assert {a["key"]: a["value"] for a in row["user_attrs"]} == \
            {k: json.dumps(v) if isinstance(v, list) else str(v)
             for k, v in trial.user_attrs.items()}
    study_attrs = {a["key"] for a in detail["user_attrs"]}
    assert {"data_fingerprint", "split_seed", "val_fraction", "code_version",
            "device"} <= study_attrs


@pytest.mark.browser
def test_a_trial_s_user_attributes_keep_to_a_line_each_in_the_dashboard(
    made: MadeStudy, dashboard: str, page: Page
) -> None:
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(dashboard + "dashboard")
    page.get_by_text(re.compile(r"^\d+\. mnist$")).click()
    page.goto(page.url.rstrip("/") + "/trials")
    # The diverged trial: its finding's evidence made the longest attr, as JSON, before.
    page.get_by_text("Trial 3", exact=True).first.click()
    trial = made.trials()[3]
    assert trial.user_attrs["findings"] == "divergence"
    label = page.get_by_text("User Attributes", exact=True)
    expect(label).to_be_visible()
    # The dashboard lists a trial's user attrs as one paragraph each, "key value".
    lines = label.locator("xpath=..").locator("p").all()[1:]
    assert len(lines) == len(trial.user_attrs)  # every attr, each on its own line
    assert [line.inner_text().split(" ", 1)[0] for line in lines] == sorted(trial.user_attrs)
    heights = [line.bounding_box()["height"] for line in lines]  # type: ignore[index]
    # One line each at this width (the findings' JSON evidence is in MLflow now, not an attr
    # of 150-750 px): none wraps onto a second line.
    assert max(heights) < 1.5 * min(heights), heights
    _shot(page, "dashboard-trial-attrs.png")


def test_the_report_s_importances_are_the_dashboard_s(made: MadeStudy, dashboard: str) -> None:
    from study.report.data import collect

    study_id = _get_json(dashboard + "api/studies")["study_summaries"][0]["study_id"]
    [shown] = _get_json(f"{dashboard}api/studies/{study_id}/param_importances")[
        "param_importances"]
    study = optuna.load_study(study_name="mnist", storage=f"sqlite:///{made.root / STORAGE}")
    report = collect(study, storage="", client=None).importances
    assert report is not None
    assert report == pytest.approx({i["name"]: i["importance"] for i in shown})  # one evaluator


# --- MLflow UI --------------------------------------------------------------------------------

@pytest.mark.browser
def test_mlflow_ui_shows_nested_runs_a_metric_chart_and_the_report(
    made: MadeStudy, mlflow_ui: MlflowUi, page: Page
) -> None:
    page.goto(mlflow_ui.runs_link)  # the link `mnist-study ui` printed
    expect(page.get_by_text("5 matching runs")).to_be_visible()  # parent + 4 trials
    expect(page.get_by_text("trial-0000")).to_be_hidden()  # children start folded...
    page.locator("button[data-component-id*='runnamecellrenderer']").first.click()
    for number in range(4):
        expect(page.get_by_text(f"trial-{number:04d}")).to_be_visible()  # ...under the parent
    expect(page.get_by_text(MODEL_NAME).first).to_be_visible()  # the registered best model

    page.locator("label:has(input[value=CHART])").click()
    page.get_by_placeholder("Search metric charts").fill("val_loss")
    chart = page.locator("[data-testid=experiment-view-compare-runs-card]",
                         has=page.get_by_text("val_loss", exact=True))
    expect(chart.get_by_text("Step")).to_be_visible()  # plotted over step = epoch
    # A curve per trial, its state in its name.
    expect(chart.get_by_text("trial-0001 complete (val_loss)")).to_have_count(1)
    # Points drawn: 3 epochs for each complete trial, 2 for the pruned one, 0 for the failed.
    assert chart.locator("g.trace path.point").count() >= 8
    _shot(page, "mlflow-ui-runs.png")

    parent = _parent_run(made)
    page.goto(f"{mlflow_ui.url}#/experiments/{parent.info.experiment_id}/runs/"
              f"{parent.info.run_id}/artifacts/report.html")
    # Rendered from the embedded plotly.js: this browser cannot fetch anything from outside.
    report = page.frame_locator("iframe").first
    expect(report.get_by_text("mnist-study report: mnist")).to_be_visible()
    expect(report.locator("#history .js-plotly-plot")).to_have_count(1)
    _shot(page, "mlflow-ui-report.png")


@pytest.mark.browser
def test_the_printed_link_opens_the_runs_table_sorted_by_the_objective(
    made: MadeStudy, mlflow_ui: MlflowUi, page: Page
) -> None:
    page.goto(mlflow_ui.runs_link)  # the link `mnist-study ui` printed
    expect(page.get_by_text("5 matching runs")).to_be_visible()  # the runs table...
    expect(page.get_by_text("Model training")).to_be_visible()  # ...of the classic ML view
    page.get_by_role("button", name=re.compile("^Sort")).click()
    page.get_by_text("best_val_loss", exact=True).first.click()  # a metric of every trial
    page.get_by_role("button", name=re.compile("^Sort")).click()
    page.get_by_role("button", name="Sort ascending").click()
    page.keyboard.press("Escape")
    expect(page.get_by_role("button", name="Sort: best_val_loss")).to_be_visible()
    ranked = sorted((t for t in made.trials() if "best_val_loss" in t.user_attrs),
                    key=lambda t: t.user_attrs["best_val_loss"])
    # The button says so before the grid has re-sorted every row (a CI run on busy cores read
    # the rows midway): wait for each place to show its trial, then read them all. A place
    # is a row in each of the grid's column groups; the run's name is in one of them.
    for place, trial in enumerate(ranked):
        expect(page.locator(f"[role=row][row-index='{place}']").filter(
            has_text=re.compile(r"trial-\d{4}"))).to_contain_text(f"trial-{trial.number:04d}")
    # The grid keeps its rows in the DOM in any order; each carries its place in row-index.
    placed, parent_at = {}, None
    for row in page.locator("[role=row][row-index]").all():
        text, at = row.inner_text(), int(row.get_attribute("row-index") or 0)
        found = re.search(r"trial-\d{4} [a-z@ 0-9]+?(?=\n|$)", text)
        if found:
            placed[at] = found.group(0).strip()
        elif re.search(r"\bmnist@\d{8}-\d{6}", text):
            parent_at = at
    names = [placed[i] for i in sorted(placed)]
    numbers = [int(name[6:10]) for name in names]
    assert numbers[:len(ranked)] == [t.number for t in ranked]  # best first, as Optuna ranks
    # The parent run's study.best_val_loss is another metric: it never ranks among its trials.
    ranked_at = sorted(placed)[:len(ranked)]
    assert parent_at is not None and parent_at > max(ranked_at)
    assert names[0] == f"trial-{ranked[0].number:04d} complete"  # the state in the name
    assert any(name.startswith("trial-0002 pruned@") for name in names)
    _shot(page, "mlflow-ui-sorted.png")


def _parent_run(made: MadeStudy) -> mlflow.entities.Run:
    client = MlflowClient(made.tracking_uri)
    experiment = client.get_experiment_by_name("mnist")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id],
                              filter_string="tags.`mnist_study.role` = 'study'")
    assert len(runs) == 1  # one parent run per `run` invocation
    return runs[0]


def test_mlflow_api_matches_the_optuna_storage(made: MadeStudy, mlflow_ui: MlflowUi,
                                               tmp_path: Path) -> None:
    client = MlflowClient(mlflow_ui.url)  # through the server the UI reads
    experiment = client.get_experiment_by_name("mnist")  # one experiment per study
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if r.data.tags.get("mnist_study.role") == "study"]
    children = {r.info.run_id: r for r in runs if r.data.tags.get("mnist_study.role") == "trial"}
    assert len(parent) == 1 and len(children) == 4
    stored = made.trials()
    for trial in stored:
        run = children[trial.user_attrs["mlflow_run_id"]]
        assert run.data.tags["mlflow.parentRunId"] == parent[0].info.run_id  # nested
        assert run.data.tags["optuna.trial_number"] == str(trial.number)
        assert run.data.tags["optuna.state"] == trial.state.name
        assert run.data.tags["optuna.diagnosis"] == trial.user_attrs["diagnosis"]
        # The same names and values (the batch size as a number, not its sortable label).
        assert run.data.params == {k: str(v) for k, v in
                                   hyperparams_from_params(trial.params).as_params().items()}
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert {m.step: m.value for m in history} == trial.intermediate_values  # exact
        if trial.value is not None:
            assert trial.value == min(m.value for m in history)  # value = best epoch's loss
    best = optuna.load_study(study_name="mnist",
                             storage=f"sqlite:///{made.root / STORAGE}").best_trial
    assert parent[0].data.params["best.lr"] == str(best.params["lr"])  # best params on parent
    assert parent[0].data.tags["best_trial_number"] == str(best.number)
    local = client.download_artifacts(parent[0].info.run_id, "audit/audit.json", str(tmp_path))
    audit = json.loads(Path(local).read_text())  # the split/leakage summary
    assert {p["name"]: p["size"] for p in audit["parts"]} == {  # the 3:1 split, and test
        "train": STUDY_TRAIN_IMAGES * 3 // 4, "val": STUDY_TRAIN_IMAGES // 4, "test": 100}
    assert audit["index_overlaps"] == {"train&val": 0}  # disjoint


def test_registered_model_reproduces_the_printed_test_accuracy(
    made: MadeStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", made.tracking_uri)  # models:/ resolves here
    # README's loading snippet: models-from-code, no pickle, the eval-mode nn.Module inside.
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/latest").unwrap_python_model().model
    metadata = mlflow.models.get_model_info(f"models:/{MODEL_NAME}/latest").metadata
    assert metadata is not None
    normalizer = Normalizer(mean=metadata["normalizer_mean"], std=metadata["normalizer_std"])
    files = find_mnist(made.data, verify=False)
    assert files is not None
    search = prepare_search_data(files, val_fraction=0.25, seed=0, device=torch.device("cpu"))
    assert normalizer == search.normalizers[0]  # the model says which (train-only) normaliser
    test = files.load("test")
    _, accuracy = evaluate(model, to_tensor_set(test.images, test.labels, normalizer,
                                                torch.device("cpu")))
    logged = _parent_run(made).data.metrics["test_accuracy"]
    # The study ran in another process (another intra-op thread count, another order of the
    # sums): the logits agree to rounding, so at most an image at a near tie could flip.
    assert accuracy == pytest.approx(logged, abs=1 / len(test.labels))
    printed = re.search(r"TEST accuracy\s+(\S+)%", made.stdout)
    assert printed is not None and printed.group(1) == f"{logged:.2%}".rstrip("%")  # as logged


def test_both_servers_listen_on_loopback_only(dashboard: str, mlflow_ui: MlflowUi) -> None:
    tcp = Path("/proc/net/tcp")
    if not tcp.exists():
        pytest.skip("needs Linux /proc/net/tcp")
    for url in (dashboard, mlflow_ui.url):
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        listening = _listeners(port)
        assert listening and listening <= {"0100007F"}  # 127.0.0.1, nothing else, no IPv6


def _listeners(port: int) -> set[str]:
    """Local addresses (hex, as the kernel writes them) LISTENing on PORT, IPv4 and IPv6."""
    found = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


# --- the study report -------------------------------------------------------------------------

@pytest.mark.browser
def test_the_report_opens_offline_with_every_section_and_no_console_error(
    made: MadeStudy, browser: Browser
) -> None:
    from study.report.html import SECTIONS

    out = made.root / "report.html"
    written = subprocess.run([sys.executable, "-m", "study", "report", "--output", str(out)],
                             cwd=made.root, env=cli_env(), capture_output=True, text=True,
                             timeout=120)  # the defaults: the stores `run` made here
    assert written.returncode == 0, written.stderr
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    fetched: list[str] = []

    def offline(route: Any) -> None:  # the network is cut: only the file itself loads
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            fetched.append(route.request.url)
            route.abort()

    context.route("**/*", offline)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(out.as_uri())
    for section in SECTIONS:
        expect(page.locator(f"section#{section} h2")).to_be_visible()
    # Drawn by the embedded plotly.js: history, importances, scheduler, regularisation, curves.
    expect(page.locator(".js-plotly-plot")).to_have_count(5)
    findings = page.locator("section#findings tr", has=page.get_by_text("divergence"))
    expect(findings.locator("td").nth(1)).to_have_text("1")  # the planted diverging trial
    expect(page.locator("section#audit img")).to_be_visible()  # the closest pairs
    assert problems == [] and fetched == []
    _shot(page, "report.png")
    context.close()
