"""gantools paint: the studio's edits, the JSON API with its validation, the CLI, and the page in chromium.

The model is the planted tiny GAN (unit 0 of its last block drives brightness) with the 'bright'
segmenter, so edits have a known effect and everything runs in seconds.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from browser import browser_page  # noqa: F401  (the one Playwright fixture of the suite)
from conftest import Bright, planted_gan, ship_dissection
from gantools.dissection import dissect
from gantools.hooks import generate_from
from gantools.interventions import Intervention
from gantools.paint import PaintSettings, make_server, open_studio, paint_report, sample_state
from gantools.utils import GantoolsError, to_uint8

SEED = 3


@pytest.fixture(scope="module")
def studio():
    torch.manual_seed(0)
    gan = planted_gan()
    report = dissect(gan, layers=2, segmenter=Bright(), n=64, seed=1, top_k=0)
    return open_studio(gan, report, layer=2, segmenter=Bright(), device="cpu",
                       settings=PaintSettings(top=2, steps=3, restarts=1, history=3, max_upload_pixels=100 * 100))


@pytest.fixture
def server(studio):
    errors: list[str] = []
    srv = make_server(studio, start=sample_state(studio, SEED), on_error=errors.append)
    srv.errors = errors
    srv.start_in_thread()
    yield srv
    srv.shutdown()
    srv.server_close()


class Client:
    """Requests as the page sends them (or deliberately not)."""

    def __init__(self, server) -> None:
        self.port = server.server_address[1]
        self.session: str | None = None

    def raw(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        h = {"X-Paint-Session": self.session} if self.session else {}
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, data, r

    def call(self, path: str, body: dict | None = None, method: str = "POST") -> tuple[int, dict]:
        payload = json.dumps(body or {}).encode() if method == "POST" else None
        status, data, _ = self.raw(method, path, payload, {"Content-Type": "application/json"} if payload else {})
        view = json.loads(data)
        if status == 200 and "session" in view:
            self.session = view["session"]
        return status, view


def pixels(view: dict) -> torch.Tensor:
    from PIL import Image

    data = base64.b64decode(view["image"].split(",", 1)[1])
    return torch.from_numpy(np.array(Image.open(io.BytesIO(data)))).permute(2, 0, 1)


def square(size: int, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    m[r0:r1, c0:c1] = True
    return m


def wire(region: torch.Tensor) -> str:
    return "".join("1" if v else "0" for v in region.flatten().tolist())


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# The studio and sessions


def test_palette_counts_interpretable_units(studio):
    layer = studio.dissection.layers["layer2"]
    assert [e.name for e in studio.palette] == ["dark", "bright"]
    assert [e.units for e in studio.palette] == [len(layer.units_for(c)) for c in ("dark", "bright")]
    described = studio.describe()
    assert described["layer"] == "layer2" and described["size"] == 16 and len(described["concepts"]) == 2


def test_apply_is_the_intervention_of_edit_inside_the_stroke(server, studio):
    """Inside the stroke the image is exactly what `Intervention` with that region draws; outside it
    is the image before, to the pixel; the fractions are the segmenter's."""
    client = Client(server)
    status, first = client.call("/api/session")
    assert status == 200 and first["seed"] == SEED and not first["can_undo"]
    region = square(16, 4, 12, 2, 10)
    status, view = client.call("/api/apply", {"concept": "bright", "action": "remove", "strength": 1.0,
                                              "mask": wire(region)})
    assert status == 200, view
    before, after = pixels(first), pixels(view)
    G = studio.generator
    plan, _ = studio.plan("bright")
    with torch.no_grad(), Intervention(G, "layer2", plan.units, value=0.0, strength=1.0, region=region):
        expected = to_uint8(G(G.sample_z(1, SEED))[0])
    assert torch.equal(after[:, region], expected[:, region])
    assert torch.equal(after[:, ~region], before[:, ~region])
    assert not torch.equal(after[:, region], before[:, region])
    change = view["change"]
    assert change["concept"] == "bright" and change["units"] == plan.units == [0, 1]
    labels = Bright()(after[None].float() / 127.5 - 1)[0]
    assert change["fractions"]["bright"]["after"] == pytest.approx(float((labels == 1).float().mean()))
    assert change["fractions"]["bright"]["after"] < change["fractions"]["bright"]["before"]
    assert change["inside"]["after"] < change["inside"]["before"] and change["note"] is None


def test_undo_redo_restore_exactly_and_history_is_capped(server):
    client = Client(server)
    _, start = client.call("/api/session")
    views = [start]
    for k in range(4):  # the history keeps 3 edits
        _, v = client.call("/api/apply", {"concept": "bright", "action": "remove" if k % 2 == 0 else "add",
                                          "strength": 0.8, "mask": wire(square(16, 2 * k, 2 * k + 6, 3, 13))})
        views.append(v)
    assert views[-1]["steps"] == 4 and views[-1]["can_undo"]
    for k in (3, 2, 1):
        status, v = client.call("/api/undo")
        assert status == 200 and v["image"] == views[k]["image"] and v["change"] == views[k]["change"]
    status, v = client.call("/api/undo")
    assert status == 400 and v == {"error": "nothing to undo"}  # the first edit fell out of the history
    _, v = client.call("/api/redo")
    assert v["image"] == views[2]["image"]
    # a new edit after undo drops the redo branch
    _, v = client.call("/api/apply", {"concept": "dark", "action": "add", "strength": 1, "mask": wire(square(16, 0, 4, 0, 4))})
    assert not v["can_redo"] and client.call("/api/redo")[0] == 400
    _, v = client.call("/api/sample", {"seed": 11})
    assert v["seed"] == 11 and v["steps"] == 1 and v["change"] is None and v["source"] == "sample 11"


def test_two_sessions_do_not_interfere(server):
    a, b = Client(server), Client(server)
    _, va = a.call("/api/session")
    _, vb = b.call("/api/session", {"seed": 5})
    assert va["session"] != vb["session"] and vb["seed"] == 5
    _, edited = a.call("/api/apply", {"concept": "bright", "action": "remove", "strength": 1,
                                      "mask": wire(square(16, 0, 16, 0, 8))})
    status, again = b.call("/api/undo")
    assert status == 400  # b has nothing to undo: a's edit is a's alone
    _, vb2 = b.call("/api/sample", {"seed": 5})
    assert vb2["image"] == vb["image"] and a.call("/api/undo")[1]["image"] == va["image"]


def test_notes_say_when_the_concept_was_absent(studio):
    from gantools.paint import PaintSession

    state = sample_state(studio, SEED)
    bright = state.labels == 1
    if not bool((~bright).any()):
        pytest.skip("the sample is all bright")
    session = PaintSession(studio, "s", state)
    after = session.apply(~bright, "bright", "remove", 1.0)
    assert after.change["note"].startswith("there was no bright in the brushed region (dark there)")


def test_paint_report_is_cached_by_fingerprint(tiny_model_file, tmp_path, monkeypatch):
    from gantools.models import load_model
    from gantools.segmenters import ColorSegmenter

    gan = load_model(tiny_model_file)
    notes: list[str] = []
    first = paint_report(gan, "layer1", ColorSegmenter(), n=8, cache_dir=tmp_path, progress=lambda p: notes.append(p.message))
    assert any("dissecting layer1 on 8 samples" in str(n) for n in notes)
    import gantools.dissection

    monkeypatch.setattr(gantools.dissection, "dissect", lambda *a, **k: pytest.fail("dissected again"))
    again = paint_report(gan, "layer1", ColorSegmenter(), n=8, cache_dir=tmp_path, progress=lambda p: notes.append(p.message))
    assert again == first and "cached in" in notes[-1]
    torch.manual_seed(5)
    other = load_model(tiny_model_file)
    with torch.no_grad():
        next(other.generator.parameters()).add_(1.0)
    calls = []
    monkeypatch.setattr(gantools.dissection, "dissect", lambda *a, **k: calls.append(1) or first)
    paint_report(other, "layer1", ColorSegmenter(), n=8, cache_dir=tmp_path)  # another model: not the cached one
    paint_report(gan, "layer1", ColorSegmenter(), n=9, cache_dir=tmp_path)  # another n
    assert len(calls) == 2


def test_open_studio_layers(tiny_model_file, tmp_path):
    report = dissect(str(tiny_model_file), layers=1, segmenter="color", n=8, top_k=0)
    studio = open_studio(str(tiny_model_file), report, device="cpu")
    assert studio.layer == "layer1"  # the report's only layer (the default, 3, is past this model's 2 blocks)
    with pytest.raises(GantoolsError, match="no layer2"):
        open_studio(str(tiny_model_file), report, layer=2, device="cpu")
    with pytest.raises(GantoolsError, match="top must be at least 1"):
        PaintSettings(top=0)


def test_the_palette_takes_the_causal_ranking_shipped_with_the_model(tmp_path):
    from gantools.models import save_model

    gan = planted_gan()
    model = save_model(tmp_path / "m" / "model.safetensors", gan.generator, gan.discriminator)
    shipped = dissect(gan, layers=2, segmenter=Bright(), n=32, seed=1, top_k=0)
    units = shipped.layers["layer2"].units
    shipped.layers["layer2"].ace["bright"] = [float(u == 6) for u in range(units)]  # unit 6 alone
    ship_dissection(shipped, model)
    palette = dissect(gan, layers=2, segmenter=Bright(), n=64, seed=1, top_k=0)  # no rankings of its own
    notes = []
    studio = open_studio(str(model), palette, layer=2, segmenter=Bright(), device="cpu",
                         settings=PaintSettings(top=1), progress=notes.append)
    assert palette.layers["layer2"].ranked_units("bright", "iou")[0] != 6
    assert studio.plan("bright")[0].units == [6] and studio.plan("dark")[0].units == \
        palette.layers["layer2"].ranked_units("dark", "iou")[:1]
    assert palette.layers["layer2"].ace == {}  # the report given is not changed
    assert any(n.message and "shipped with the model" in n.message for n in notes)


# ---------------------------------------------------------------------------------------------
# The server: validation, and it keeps serving


def test_page_is_self_contained(server):
    import re

    client = Client(server)
    status, body, r = client.raw("GET", "/")
    text = body.decode()
    assert status == 200 and r.getheader("Content-Type").startswith("text/html")
    assert "default-src 'none'" in r.getheader("Content-Security-Policy") and "connect-src 'self'" in text
    assert "http://" not in text and "https://" not in text and "@import" not in text
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", text)
    for control in ("brush", "clear", "apply", "undo", "redo", "seed", "new-sample", "upload", "download",
                    "strength", "palette", "changed", "progress"):
        assert f'id="{control}"' in text


@pytest.mark.parametrize("body, reason", [
    ({"concept": "door", "action": "add"}, "unknown concept 'door': the palette has dark, bright"),
    ({"layer": "layer1"}, "unknown layer 'layer1': this studio paints layer2"),
    ({"action": "paint"}, "unknown action 'paint': use add or remove"),
    ({"strength": 1.5}, "strength must be a number between 0 and 1, got 1.5"),
    ({"strength": "1"}, "strength must be a number between 0 and 1, got 1"),
    ({"mask": "1" * 255}, "the mask has 255 pixels: it must have 16 x 16 = 256"),
    ({"mask": "2" * 256}, "malformed mask: only '0' and '1' may appear, one per pixel"),
    ({"mask": [1] * 256}, "malformed mask: give a string of '0' and '1', one per pixel, row by row"),
    ({"mask": "0" * 256}, "the mask selects no pixels: brush over the image first"),
])
def test_bad_edits_get_a_400_with_one_line(server, body, reason):
    client = Client(server)
    client.call("/api/session")
    request = {"concept": "bright", "action": "remove", "strength": 1.0, "mask": "1" * 256, **body}
    status, view = client.call("/api/apply", request)
    assert (status, view) == (400, {"error": reason})


def test_malformed_requests_and_paths(server):
    client = Client(server)
    assert client.call("/api/session")[0] == 200
    cases = [
        (("POST", "/api/apply", b"{nope", {"Content-Type": "application/json"}), 400, "malformed JSON"),
        (("POST", "/api/apply", b"[1, 2]", {"Content-Type": "application/json"}), 400, "send a JSON object"),
        (("POST", "/api/apply", b"{}", {"Content-Type": "text/plain"}), 415, "send JSON"),
        (("POST", "/api/apply", b"x" * 70_000, {"Content-Type": "application/json"}), 413, "at most"),
        (("POST", "/api/undo", b"{}", {"Content-Type": "application/json", "X-Paint-Session": "forged"}), 404,
         "unknown session"),
        (("GET", "/api/apply", None, {}), 405, "/api/apply takes POST, not GET"),
        (("GET", "/../../etc/passwd", None, {}), 404, "nothing at"),
        (("GET", "/%2e%2e/%2e%2e/etc/passwd", None, {}), 404, "nothing at"),
        (("GET", "/gantools/paint/page.py", None, {}), 404, "nothing at"),
        (("GET", "/", None, {"Host": "evil.example:80"}), 400, "unexpected Host"),
        (("POST", "/api/sample", b'{"seed": -1}', {"Content-Type": "application/json"}), 400, "seed must be"),
        (("POST", "/api/sample", b'{"seed": "x"}', {"Content-Type": "application/json"}), 400, "seed must be"),
        (("DELETE", "/api/session", None, {}), 404, "nothing at"),
    ]
    for (method, path, body, headers), want, reason in cases:
        status, data, _ = client.raw(method, path, body, headers)
        answer = json.loads(data)
        assert status == want and reason in answer["error"] and "\n" not in answer["error"], (path, answer)
    no_session = Client(server)
    assert no_session.call("/api/undo") == (400, {"error": "no session: send the X-Paint-Session header "
                                                          "(reload the page)"})
    assert client.call("/api/studio", method="GET")[0] == 200  # still serving
    assert server.errors == []


def test_a_failing_edit_is_a_500_and_the_server_goes_on(server, studio, monkeypatch):
    client = Client(server)
    client.call("/api/session")

    def broken(*args, **kwargs):
        raise RuntimeError("the model\nbroke")

    monkeypatch.setattr(studio, "paint", broken)
    status, view = client.call("/api/apply", {"concept": "bright", "action": "add", "mask": "1" * 256})
    assert (status, view) == (500, {"error": "internal error (RuntimeError): the model broke"})
    assert len(server.errors) == 1 and "RuntimeError" in server.errors[0]
    monkeypatch.undo()
    assert client.call("/api/apply", {"concept": "bright", "action": "add", "mask": "1" * 256})[0] == 200


def test_upload_is_inverted_and_keeps_its_pixels_outside_the_stroke(server, studio):
    client = Client(server)
    client.call("/api/session")
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    status, data, _ = client.raw("POST", "/api/upload?name=../photo.png", png(photo), {"Content-Type": "image/png"})
    view = json.loads(data)
    assert status == 200, view
    assert torch.equal(pixels(view), torch.from_numpy(photo).permute(2, 0, 1))  # the page shows the photo itself
    assert view["source"].startswith("photo, inverted layer-wise: PSNR") and view["seed"] is None
    job = client.call("/api/progress", method="GET")[1]
    assert job["running"] is False and job["task"] == "invert" and job["completed"] == job["total"] > 0
    region = square(16, 5, 11, 5, 11)
    _, edited = client.call("/api/apply", {"concept": "bright", "action": "add", "strength": 1, "mask": wire(region)})
    after = pixels(edited)
    assert torch.equal(after[:, ~region], torch.from_numpy(photo).permute(2, 0, 1)[:, ~region])
    assert not torch.equal(after[:, region], torch.from_numpy(photo).permute(2, 0, 1)[:, region])
    big = np.zeros((101, 100, 3), dtype=np.uint8)
    for body, headers, want, reason in [
        (b"not an image", {"Content-Type": "image/png"}, 415, "not an image"),
        (png(big), {"Content-Type": "image/png"}, 413, "101 pixels: at most 10,000"),
        (png(photo), {"Content-Type": "text/plain"}, 415, "upload an image file"),
        (b"", {"Content-Type": "image/png"}, 400, "the upload is empty"),
        (b"x" * (studio.settings.max_upload_bytes + 1), {"Content-Type": "image/png"}, 413, "at most"),
    ]:
        status, data, _ = client.raw("POST", "/api/upload", body, headers)
        assert status == want and reason in json.loads(data)["error"]
    assert server.errors == []


def test_progress_is_answered_while_an_upload_runs(server, studio, monkeypatch):
    import threading

    from gantools.utils import Progress

    client = Client(server)
    client.call("/api/session")
    halfway, finish = threading.Event(), threading.Event()

    def slow_invert(image, name="image", progress=None):
        progress(Progress("invert", 50, 200))
        halfway.set()
        assert finish.wait(60)
        return studio.sample(SEED), 30.0

    monkeypatch.setattr(studio, "invert", slow_invert)
    answers = []
    upload = threading.Thread(target=lambda: answers.append(client.raw(
        "POST", "/api/upload?name=p.png", png(np.zeros((16, 16, 3), dtype=np.uint8)), {"Content-Type": "image/png"})))
    upload.start()
    assert halfway.wait(60)
    status, job = client.call("/api/progress", method="GET")  # not held up by the running upload
    finish.set()
    upload.join(60)
    assert status == 200 and job == {"running": True, "task": "invert", "completed": 50, "total": 200, "message": None}
    assert answers[0][0] == 200 and json.loads(answers[0][1])["source"] == "p, inverted layer-wise: PSNR 30.0 dB"


# ---------------------------------------------------------------------------------------------
# The command


def test_paint_command_serves_until_ctrl_c(tiny_model_file, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import gantools.paint.server
    import webbrowser
    from gantools.cli import app

    report = dissect(str(tiny_model_file), layers=1, segmenter="color", n=8, top_k=0)
    report.save(tmp_path / "rep", html=False)
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)

    def ctrl_c(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gantools.paint.server.PaintServer, "serve_forever", ctrl_c)
    runner = CliRunner()
    result = runner.invoke(app, ["paint", "--model", str(tiny_model_file), "--report", str(tmp_path / "rep"),
                                 "--device", "cpu", "--seed", "4"])
    assert result.exit_code == 0, result.output
    url = result.stdout.splitlines()[0].split()[2]
    assert url.startswith("http://127.0.0.1:") and opened == [url]
    assert result.stdout.splitlines()[-1] == "gantools paint: stopped. Goodbye."
    assert "warning" not in result.output
    result = runner.invoke(app, ["paint", "--model", str(tiny_model_file), "--report", str(tmp_path / "rep"),
                                 "--device", "cpu", "--host", "0.0.0.0", "--no-browser"])
    assert result.exit_code == 0 and "warning: serving on 0.0.0.0" in result.output and len(opened) == 1
    result = runner.invoke(app, ["paint", "--model", str(tiny_model_file), "--report", str(tmp_path / "rep"),
                                 "--layer", "2", "--no-browser"])
    assert result.exit_code == 1 and "no layer2" in result.output
    result = runner.invoke(app, ["paint", "--model", str(tiny_model_file), "--image", str(tmp_path / "missing.png")])
    assert result.exit_code == 2 and "no image file" in result.output


# ---------------------------------------------------------------------------------------------
# The page in a real browser


def test_paint_in_chromium(server, studio, browser_page):  # noqa: F811 - the fixture
    page = browser_page.page
    page.goto(server.url)
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#palette input[name=concept]").count() == 2
    img = page.locator("#image")
    before_src = img.get_attribute("src")
    page.check("input[name=concept][value=bright]")
    page.check("input[name=action][value=remove]")
    box = page.locator("#mask").bounding_box()
    # a stroke across the middle of the image
    page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.45 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.8 * box["width"], box["y"] + 0.55 * box["height"], steps=12)
    page.mouse.up()
    with page.expect_response("**/api/apply") as answer:
        page.click("#apply")
    response = answer.value
    assert response.status == 200
    sent = json.loads(response.request.post_data)
    region = torch.tensor([c == "1" for c in sent["mask"]]).view(16, 16)
    assert sent["concept"] == "bright" and sent["action"] == "remove" and 0 < int(region.sum()) < 256
    view = response.json()
    page.wait_for_function("src => document.getElementById('image').src === src", arg=view["image"])
    before = pixels({"image": before_src})
    after = pixels(view)
    assert not torch.equal(after[:, region], before[:, region]), "nothing changed inside the stroke"
    assert torch.equal(after[:, ~region], before[:, ~region]), "pixels outside the stroke changed"
    assert page.locator("#change-table tr").count() >= 2
    with page.expect_response("**/api/undo") as answer:
        page.click("#undo")
    undone = answer.value.json()
    page.wait_for_function("src => document.getElementById('image').src === src", arg=undone["image"])
    assert torch.equal(pixels(undone), before) and img.get_attribute("src") == before_src
    assert page.locator("#download").get_attribute("href") == before_src
    assert browser_page.problems(allowed=(server.url,)) == []
    assert any(u.startswith(server.url + "api/") for u in browser_page.requests)


def test_page_says_what_strength_and_weak_concepts_mean(server, studio, browser_page):  # noqa: F811 - the fixture
    """The slider is labelled for what it is (how far towards q99, the one high level a report stores,
    or how much is switched off), and choosing a weak concept shows an explicit notice: it is allowed,
    but an edit may do little."""
    page = browser_page.page

    def weak_dark(route):  # the palette as a report with a weak 'dark' would give it
        answer = route.fetch()
        described = answer.json()
        for c in described["concepts"]:
            if c["name"] == "dark":
                c.update(units=0, weak=True, note="no unit of layer2 reaches the interpretable line for dark")
        route.fulfill(response=answer, json=described)

    page.route("**/api/studio", weak_dark)
    page.goto(server.url)
    page.wait_for_selector("body[data-ready='1']")
    note = page.locator("#strength-note")
    assert "Remove: 100% of the units' activation is switched off" in note.text_content()
    page.check("input[name=action][value=add]")
    page.locator("#strength").fill("0.5")
    assert page.locator("#strength-value").text_content() == "0.50"
    text = note.text_content()
    assert "50% of the way" in text and "q99" in text and "0.99 quantile" in text
    page.check("input[name=concept][value=bright]")
    bright = studio.palette[[e.name for e in studio.palette].index("bright")]
    shown = page.locator("#concept-note").text_content()
    if bright.note is None:  # interpretable: nothing to say
        assert shown == ""
    else:  # below the line but drawn (the tiny model's case): its units are used, and the page says so
        assert not bright.weak and shown.startswith(bright.note) and "used all the same" in shown
    page.check("input[name=concept][value=dark]")
    weak = page.locator("#concept-note").text_content()
    assert "dark is weak at layer2" in weak and "may change little or nothing" in weak
    assert page.locator("#palette label.weak").count() == 1
    assert browser_page.problems(allowed=(server.url,)) == []


def test_upload_in_chromium(server, studio, browser_page, tmp_path):  # noqa: F811 - the fixture
    """The page's upload path end to end: choosing a file sends it, the busy bar goes once it is
    inverted, and the photo itself (not its reconstruction) is what the page then shows."""
    page = browser_page.page
    page.goto(server.url)
    page.wait_for_selector("body[data-ready='1']")
    photo = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    path = tmp_path / "holiday.png"
    path.write_bytes(png(photo))
    with page.expect_response("**/api/upload?name=holiday.png") as answer:
        page.set_input_files("#upload", str(path))
    assert answer.value.status == 200  # (its body is read through the page: the inspector drops large ones)
    page.wait_for_function("() => !document.body.classList.contains('uploading')")
    assert page.locator("#source").text_content().startswith("holiday, inverted layer-wise: PSNR")
    assert torch.equal(pixels({"image": page.locator("#image").get_attribute("src")}),
                       torch.from_numpy(photo).permute(2, 0, 1))
    assert page.locator("#busy").is_hidden()
    assert browser_page.problems(allowed=(server.url,)) == []
