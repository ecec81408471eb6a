"""The report: what it computes about nodes, the pages it writes, and the pages in a real browser."""

import json
import os
import re
import shutil
import threading
import urllib.request
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sparse_circuits.runs import Run, load_model
from sparse_circuits.circuits.ablations import AblationInputs, ablation_values
from sparse_circuits.circuits.api import validate_circuit
from sparse_circuits.circuits.circuit import Circuit, TaskSample
from sparse_circuits.circuits.prune import Calibration, PruneConfig
from sparse_circuits.circuits.edges import count_edges
from sparse_circuits.circuits.masks import Ablation
from sparse_circuits.cli import main
from sparse_circuits.data import load_tokenizer, prepare_data
from sparse_circuits.errors import UserError
from sparse_circuits.fileio import sha256_file
from sparse_circuits.nodes import NodeId
from sparse_circuits.report import analysis, build_report
from sparse_circuits.report.serve import address, make_server
from sparse_circuits.train import train

from conftest import tiny_config, write_corpus

# Markup in the corpus: it must reach the page as text and never as markup.
HOSTILE = '# <script>alert("pwned")</script></div><img src=x onerror=alert(1)>\nbanner = "</script><b>&amp;"\n'


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    corpus = write_corpus(root / "corpus", n_files=30, seed=3)
    for path in sorted(corpus.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        path.write_text(HOSTILE * 3 + text + HOSTILE * 3, encoding="utf-8")
    data = root / "data"
    prepare_data(str(corpus), data, vocab_size=320, val_frac=0.2, seed=0, log=lambda *_: None)
    run = root / "run"
    train(tiny_config(data, steps=20), run, progress=False)
    return run


def handmade_circuit(run_dir: Path, out: Path, task: str = "single_double_quote") -> Path:
    """A circuit written by hand (a few nodes per site, edges from the real weights): the viewer
    must show whatever circuit it is given, so its tests need no pruning."""
    model, cfg = load_model(run_dir)
    d_head = model.cfg.d_head
    keep = {name: torch.zeros(site.width, dtype=torch.bool) for name, site in model.node_sites().items()}
    for name in keep:
        keep[name][: 4 if not name.endswith("post_act") else 8] = True
    keep["1.attn.q"][:] = False
    keep["1.attn.q"][[0, 1, d_head]] = True  # head 0 shares channels 0, 1 with the keys; head 1 none
    edges = count_edges(model, keep)
    tok = load_tokenizer(run_dir / "tokenizer.json")
    from sparse_circuits.tasks import Split, get_task

    prompts = get_task(task).build(tok, Split.TRAIN, 8).prompt_tokens
    inputs = AblationInputs(model, Run(run_dir), cfg.data_dir, prompts, progress=False)
    means = ablation_values(inputs, [Ablation.MEAN_PRETRAIN])[Ablation.MEAN_PRETRAIN]
    circuit = Circuit(
        task=task, model_dir=str(run_dir), model_sha256=sha256_file(run_dir / "model.safetensors"),
        config=PruneConfig(), loss=0.5, loss_calibrated=0.4, calibration=Calibration(),
        nodes=sorted(NodeId.at(n, i) for n, k in keep.items() for i in k.nonzero().squeeze(1).tolist()),
        edges=edges.weights, residual_links=edges.residual, qk_pairs=edges.qk_pairs,
        tau={n: k.float() - 0.5 for n, k in keep.items()}, means=means, sample=TaskSample(Split.TRAIN, 8, 0),
        loss_curve=[(0, 0.7), (20, 0.55), (60, 0.5)], seconds=1.0)
    circuit.save(out)
    validate_circuit(out, run_dir, n_pairs=8, n_random=2, progress=False)
    return out


@pytest.fixture(scope="module")
def site(hostile_run, tmp_path_factory):
    circuit_dir = handmade_circuit(hostile_run, hostile_run / "circuits" / "single_double_quote")
    out = tmp_path_factory.mktemp("site")
    result = build_report([hostile_run], [circuit_dir], out, progress=False, snippet_windows=16, log=lambda *_: None)
    return out, result


# -- what the pages are made of ----------------------------------------------------------------

def test_snippets_pick_the_extremes_and_quantiles():
    torch.manual_seed(0)
    windows = torch.arange(40 * 30).reshape(40, 30)
    acts = torch.randn(40, 30)
    acts[7, 24], acts[20, 3] = 9.0, -9.0
    s = analysis.snippets(acts, windows)
    top, bottom = s["positive"][0], s["negative"][0]
    assert top["quantile"] == 1.0 and top["value"] == 9.0 and bottom["value"] == -9.0
    first = top["examples"][0]
    assert first["tokens"][first["at"]] == int(windows[7, 24]) and first["acts"][first["at"]] == 9.0
    assert len(first["tokens"]) == analysis.CONTEXT_BEFORE + analysis.CONTEXT_AFTER + 1
    # Lower quantiles give weaker (positive) values; all examples come from distinct windows.
    values = [g["value"] for g in s["positive"]]
    assert values == sorted(values, reverse=True) and values[-1] > 0
    rows = [ex["tokens"][ex["at"]] // 30 for g in s["positive"] for ex in g["examples"]]
    assert len(rows) == len(set(rows))
    assert s["fires_positive"] + s["fires_negative"] == pytest.approx(1.0)


def test_a_node_that_never_fires_negative_has_no_negative_snippets():
    s = analysis.snippets(torch.relu(torch.randn(4, 30)), torch.zeros(4, 30, dtype=torch.long))
    assert s["negative"] == [] and s["positive"]


def test_head_patterns_use_only_the_circuits_query_key_channels(hostile_run, tmp_path):
    from sparse_circuits.circuits.circuit import load_circuit
    from sparse_circuits.tasks import Split, get_task
    from sparse_circuits.tasks.evaluate import TaskTensors

    circuit = load_circuit(handmade_circuit(hostile_run, tmp_path / "c"))
    model, _ = load_model(hostile_run)
    tok = load_tokenizer(hostile_run / "tokenizer.json")
    tt = TaskTensors.of(get_task(circuit.task).build(tok, Split.TEST, 4), model, tok)
    with torch.no_grad():  # large query/key channels 0, 1 (past AbsTopK), keys varying with the circuit's input channels
        attn = model.blocks[1].attn
        attn.c_q.bias[:2] = 20.0
        attn.c_k.bias[:2] = 20.0
        attn.c_k.weight[:2, :4] = 30.0 * torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    heads = analysis.head_patterns(model, circuit, tt, circuit.nodes)
    assert heads["1.0"]["qk_channels"] == [0, 1]
    assert heads["1.1"]["qk_channels"] == []
    for key, head in heads.items():
        for ex in head["examples"]:
            p = torch.tensor(ex["pattern"])
            assert p.shape == (len(ex["tokens"]), len(ex["tokens"]) + 1)
            torch.testing.assert_close(p.sum(-1), torch.ones(len(p)), atol=1e-2, rtol=0)  # entries rounded to 3 digits
            assert (p[:, 1:].triu(1) == 0).all()  # causal
    # No shared channel: every key gets the same score, so each query spreads evenly over its keys;
    # with shared channels (and AbsTopK leaving them nonzero somewhere) some query does not.
    def uniform_rows(head):
        p = torch.tensor(head["examples"][0]["pattern"])[:, 1:]
        return [torch.allclose(p[t, : t + 1], p[t, :1].expand(t + 1), atol=1e-3) for t in range(len(p))]

    assert all(uniform_rows(heads["1.1"]))
    assert not all(uniform_rows(heads["1.0"]))


def test_token_writers_are_the_largest_embedding_weights(hostile_run):
    model, _ = load_model(hostile_run)
    tok = load_tokenizer(hostile_run / "tokenizer.json")
    w = analysis.token_writers(model, NodeId.parse("0.attn.act_in:3"), tok)
    column = model.wte.weight[:, 3]
    assert w["top"][0]["token"] == int(column.argmax()) and w["bottom"][0]["token"] == int(column.argmin())
    assert w["nonzero"] == int((column != 0).sum())
    assert analysis.token_writers(model, NodeId.parse("0.mlp.post_act:3"), tok) is None
    out = analysis.token_writers(model, NodeId.parse("1.mlp.resid_delta:2"), tok)
    assert out["top"][0]["token"] == int((model.lm_head.weight[:, 2] * model.ln_f.weight[2]).argmax())


def test_site_files_and_escaping(site):
    out, result = site
    index = (out / "index.html").read_text(encoding="utf-8")
    page_path = next((out / "circuits").glob("*.html"))
    page = page_path.read_text(encoding="utf-8")
    assert set(result.pages) == {"index.html", f"circuits/{page_path.name}"}
    assert f'href="circuits/{page_path.name}"' in index
    for html in (index, page):
        # Nothing is loaded from anywhere: no src/href to http(s), and a policy that forbids it.
        assert not re.search(r'(src|href)="(https?:)?//', html)
        assert "default-src 'none'" in html
    # The corpus text is in the page only inside the JSON, with < and > escaped.
    assert "<script>alert" not in page and "<img src=x" not in page
    assert page.count("</script>") == page.count("<script")  # only the page's own script elements close
    data = json.loads(re.search(r'<script type="application/json" id="page-data">(.*?)</script>', page, re.S).group(1))
    assert any("<" in text for text in data["vocab"].values())  # the markup did reach the data
    node = data["nodes"][0]
    assert set(data["panels"][node]) >= {"snippets", "pairs", "writers", "head"}


def test_a_circuit_page_scores_its_tasks_diagnostic_probes(hostile_run, site, tmp_path):
    from sparse_circuits.circuits.circuit import load_circuit
    from sparse_circuits.report.analysis import probe_accuracies
    from sparse_circuits.tasks.registry import probes_of

    assert [p.name for p in probes_of("set_or_string")] == ["set_or_string_two_vars"]
    assert probes_of("single_double_quote") == []
    out, _ = site
    page = next((out / "circuits").glob("*.html")).read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script type="application/json" id="page-data">(.*?)</script>', page, re.S).group(1))
    assert data["probes"] == []  # the quote task has none
    circuit = load_circuit(handmade_circuit(hostile_run, tmp_path / "sos", task="set_or_string"))
    model, _ = load_model(hostile_run)
    (probe,) = probe_accuracies(model, circuit, load_tokenizer(hostile_run / "tokenizer.json"), n_pairs=8)
    assert probe["task"] == "set_or_string_two_vars" and 0 <= probe["model"] <= 1 and 0 <= probe["circuit"] <= 1


# -- the CLI -----------------------------------------------------------------------------------

def test_report_cli_and_mismatched_circuit(hostile_run, site, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["report", "--model", str(hostile_run), "--out", str(tmp_path / "s"), "--windows", "8"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s" / "index.html").is_file()
    assert len(list((tmp_path / "s" / "circuits").glob("*.html"))) == 1  # found under RUN_DIR/circuits
    # A circuit of another model is refused with one line naming it.
    circuit = json.loads((hostile_run / "circuits" / "single_double_quote" / "circuit.json").read_text())
    circuit["model"]["weights_sha256"] = "0" * 64
    bad = tmp_path / "bad"
    shutil.copytree(hostile_run / "circuits" / "single_double_quote", bad)
    (bad / "circuit.json").write_text(json.dumps(circuit))
    res = runner.invoke(main, ["report", "--model", str(hostile_run), str(bad), "--out", str(tmp_path / "t")])
    assert res.exit_code == 2 and "not one of the --model runs" in res.output


def test_view_serves_on_loopback_only(site):
    out, _ = site
    server = make_server(out, 0)
    assert server.server_address[0] == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(address(server)) as r:
            assert r.status == 200 and b"sparse-circuits report" in r.read()
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(UserError, match="no index.html"):
        make_server(out / "circuits", 0)


def _get(server, path: str, host: str | None = None) -> tuple[int, bytes]:
    import http.client
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=host is not None)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_view_serves_the_site_and_nothing_else(site, tmp_path, capsys):
    """Symlinks out of the site and directory listings are not found; only loopback Host headers are
    answered (DNS rebinding); a client that hangs up early leaves no traceback."""
    import socket

    out = tmp_path / "site"
    shutil.copytree(site[0], out)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "passwd").write_text("root:x:0:0")
    (out / "leak").symlink_to(secret)
    (out / "leak.txt").symlink_to(secret / "passwd")
    server = make_server(out, 0)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        status, body = _get(server, "/index.html")
        assert status == 200 and b"sparse-circuits report" in body
        assert _get(server, "/index.html", host=f"localhost:{port}")[0] == 200
        for path in ("/leak/passwd", "/leak.txt", "/leak/", "/circuits/", "/../secret/passwd", "/%2e%2e/secret/passwd"):
            status, body = _get(server, path)
            assert status == 404 and b"root:x" not in body, path
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", f"localhost:{port + 1}"):
            status, body = _get(server, "/index.html", host=host)
            assert status == 403 and b"sparse-circuits report" not in body, host
        with socket.create_connection(server.server_address[:2]) as sock:  # ask for a page, then hang up
            sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _get(server, "/index.html")[0] == 200
    finally:
        server.shutdown()
        server.server_close()
    assert "Traceback" not in capsys.readouterr().err


# -- in a real browser -------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("SPARSE_CIRCUITS_REQUIRE_BROWSER"):
            pytest.fail("chromium not found (apt-get install chromium); CI requires the browser tests")
        pytest.skip("chromium not installed (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"])
        yield b
        b.close()


class Watched:
    """A page opened from a file, with every console message, page error, dialog and non-file
    request recorded."""

    def __init__(self, browser, path: Path):
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type in ("error", "warning") and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.on("request", lambda r: not r.url.startswith(("file://", "data:")) and
                     self.problems.append(f"request: {r.url}"))
        self.page.goto(path.as_uri())


def circuit_page(site) -> Path:
    return next((site[0] / "circuits").glob("*.html"))


def test_pages_load_from_file_without_errors_or_requests(browser, site):
    w = Watched(browser, site[0] / "index.html")
    assert w.page.locator("table#tasks tbody tr").count() == 21
    w.page.locator("table#circuits a").first.click()
    w.page.wait_for_load_state()
    assert "/circuits/" in w.page.url
    assert w.page.locator("circle.node").count() > 20
    assert w.problems == []


def test_clicking_a_node_opens_its_panel_with_snippets(browser, site):
    w = Watched(browser, circuit_page(site))
    w.page.locator('circle[data-node="1.attn.q:0"]').click()
    panel = w.page.locator("#panel")
    assert panel.locator("h3").first.inner_text() == "1.attn.q:0"
    assert "Most positive" in panel.inner_text()
    assert panel.locator(".snippets .tokens").count() >= 2
    assert "Attention of layer 1 head 0" in panel.inner_text()
    assert panel.locator("svg.heat rect").count() > 0
    # Following an edge selects the node at its other end.
    panel.locator("ul.edges li").first.click()
    assert panel.locator("h3").first.inner_text() != "1.attn.q:0"
    assert w.problems == []


def test_corpus_markup_renders_as_text(browser, site):
    w = Watched(browser, circuit_page(site))
    assert w.page.evaluate("document.scripts.length") == 2  # the page's data and its script, nothing injected
    texts = []
    for node in w.page.evaluate("Object.keys(JSON.parse(document.getElementById('page-data').textContent).panels)"):
        w.page.locator(f'circle[data-node="{node}"]').click()
        texts.append(w.page.locator("#panel").inner_text())
        if any("<script>" in t or "</div>" in t for t in texts):
            break
    assert any("<script>" in t or "</div>" in t for t in texts), "no snippet showed the corpus markup"
    assert w.page.locator("#panel img, #panel script, #panel [onerror]").count() == 0
    assert w.problems == []
