"""`fracturekit review`: the server's guards over HTTP, and the page itself in headless Chromium.

The browser tests drive Debian's `chromium` + `chromium-driver` (`make test` installs them where it runs as root)
through selenium, pointed at those binaries: nothing is downloaded. They skip with the reason when either is absent.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from fracturekit.cli.app import app
from fracturekit.data.phantoms import write_phantom_dataset

pytest.importorskip("fastapi", reason="fracturekit review needs the [review] extra (fastapi, uvicorn)")
pytest.importorskip("uvicorn", reason="fracturekit review needs the [review] extra (fastapi, uvicorn)")

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 phantoms (COCO, with regions) plus two fractured films each saved again without its box, prepared, audited.

    Each copy is an exact duplicate with the other label: two label conflicts, where the boxed film outvotes its
    copy, so the page lists the two copies, each shown beside its boxed original.
    """
    raw = write_phantom_dataset(tmp_path_factory.mktemp("raw") / "rv", n=12, seed=4, size=128, fmt="coco")
    coco = json.loads((raw / "annotations.json").read_text())
    boxed = sorted(set(a["image_id"] for a in coco["annotations"]))[:2]
    for k, image_id in enumerate(boxed, 1):
        fractured = coco["images"][image_id - 1]
        shutil.copy(raw / "images" / fractured["file_name"], raw / "images" / f"copy{k}.png")
        coco["images"].append({**fractured, "id": len(coco["images"]) + 1, "file_name": f"copy{k}.png"})
        with (raw / "metadata.csv").open("a") as f:
            f.write(f"copy{k}.png,P_copy{k},forearm\n")
    (raw / "annotations.json").write_text(json.dumps(coco))
    data = tmp_path_factory.mktemp("ds") / "rv"
    assert (
        runner.invoke(app, ["prepare", str(raw), "--out", str(data), "--meta", str(raw / "metadata.csv")]).exit_code
        == 0
    )
    res = runner.invoke(app, ["audit", str(data), "--label-issues"])
    assert res.exit_code == 0 and "label issues: 2 films (2 conflict" in res.output, res.output
    return data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`fracturekit review` in a subprocess, on a free port; `url` is the address it printed."""

    def __init__(self, path: Path, *args: str) -> None:
        self.path = path
        cmd = [sys.executable, "-c", "from fracturekit.cli import main; main()", "review", str(path), *args]
        if "--port" not in args:
            cmd += ["--port", str(_free_port())]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        line = self.proc.stdout.readline()  # "review N films (...) at URL"; printed once the socket listens
        assert " at http://" in line, line + self.proc.stdout.read()
        self.url = line.rsplit(" at ", 1)[1].strip()
        self.base = self.url.split("?")[0]

    def get(self, route: str, token: str | None = None) -> int:
        req = urllib.request.Request(self.base + route.lstrip("/"), headers={"X-Token": token} if token else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def server(reviewed: Path) -> Iterator[Server]:
    shutil.rmtree(reviewed / "review", ignore_errors=True)
    srv = Server(reviewed, "--reviewer", "tester")
    yield srv
    srv.stop()


def _decisions(data: Path) -> list[dict[str, str]]:
    with (data / "review" / "decisions.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_only_films_of_path_are_served(server: Server, reviewed: Path) -> None:
    film = next(iter(csv.DictReader((reviewed / "manifest.csv").open())))["output_cls"]
    assert server.get("/api/image?path=" + film) == 200
    for outside in ("manifest.csv", "../rv/manifest.csv", "/etc/passwd", "cls/../manifest.csv", str(reviewed / film)):
        assert server.get("/api/image?path=" + urllib.request.quote(outside)) == 403, outside
    assert server.get("/static/../manifest.csv") == 404 and server.get("/static/review.js") == 200


def test_token_guards_every_request(reviewed: Path) -> None:
    # another address than the loopback needs a token: refused with one sentence before anything is bound
    res = runner.invoke(app, ["review", str(reviewed), "--host", "0.0.0.0", "--port", str(_free_port())])
    assert res.exit_code == 2 and "add a --token" in res.output
    srv = Server(reviewed, "--token", "s3cret")
    try:
        assert srv.url.endswith("/?token=s3cret")
        assert srv.get("/") == 403 and srv.get("/api/data") == 403 and srv.get("/api/data", "wrong") == 403
        assert srv.get("/api/data", "s3cret") == 200 and srv.get("/?token=s3cret") == 200
    finally:
        srv.stop()


def test_bad_paths_and_a_port_in_use_are_one_sentence(reviewed: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["review", str(tmp_path)])
    assert res.exit_code == 2 and "not a prepared dataset" in res.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        res = runner.invoke(app, ["review", str(reviewed), "--port", str(busy.getsockname()[1])])
    assert res.exit_code == 2 and "is in use" in res.output


def test_decisions_are_appended_and_checked(server: Server, reviewed: Path) -> None:
    issues = list(csv.DictReader((reviewed / "audit" / "label_issues.csv").open()))
    body = json.dumps({"path": issues[0]["path"], "decision": "exclude", "note": "double exposure"}).encode()
    req = urllib.request.Request(server.base + "api/decision", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    row = _decisions(reviewed)[-1]
    assert (row["path"], row["decision"], row["note"], row["reviewer"]) == (
        issues[0]["source"],  # as the source names it: what prepare --corrections matches
        "exclude",
        "double exposure",
        "tester",
    )
    for bad, code in ((("manifest.csv", "exclude"), 403), ((issues[0]["path"], "delete"), 400)):
        body = json.dumps({"path": bad[0], "decision": bad[1]}).encode()
        req = urllib.request.Request(server.base + "api/decision", body, {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == code
    assert len(_decisions(reviewed)) == 1


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium through chromedriver, both from Debian; skipped with the reason when absent."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the [browser] extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def _wait(condition: object, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the page")


def _alert(driver: object) -> object | None:
    """The page's open prompt (window.prompt), or None while there is none."""
    from selenium.common.exceptions import NoAlertPresentException

    try:
        alert = driver.switch_to.alert
        alert.text  # noqa: B018 (raises while no prompt is open)
        return alert
    except NoAlertPresentException:
        return None


def _drawn(driver: object) -> list[np.ndarray]:
    """The canvases of the page as screenshots (BGR), once every film of the view has loaded."""
    from selenium.webdriver.common.by import By

    _wait(lambda: driver.execute_script("return state.views.length && state.views.every(v => v.img.complete)"))
    shots = []
    for canvas in driver.find_elements(By.CSS_SELECTOR, "#films canvas"):
        png = np.frombuffer(canvas.screenshot_as_png, np.uint8)
        shots.append(cv2.imdecode(png, cv2.IMREAD_COLOR))
    return shots


def test_page_draws_films_and_keys_land_in_decisions_csv(browser: object, server: Server, reviewed: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(server.url)
    _wait(lambda: browser.execute_script("return state.data !== null && state.shown.length > 0"))
    assert browser.execute_script("return state.list") == "label issues"
    shots = _drawn(browser)
    assert len(shots) == 2  # the conflict's cluster: the film and its copy side by side
    for shot in shots:
        # not blank: the phantom's bone and soft tissue give many grey levels; green ground-truth box pixels too
        assert shot.std() > 20 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 50
    issues = list(csv.DictReader((reviewed / "audit" / "label_issues.csv").open()))
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("1")  # fracture, then the page moves to the next row
    _wait(lambda: (reviewed / "review" / "decisions.csv").is_file() and len(_decisions(reviewed)) == 1)
    body.send_keys("0")
    _wait(lambda: len(_decisions(reviewed)) == 2)
    body.send_keys("k")
    body.send_keys("x")
    _wait(lambda: len(_decisions(reviewed)) == 3)
    rows = _decisions(reviewed)
    assert [(r["path"], r["decision"], r["new_label"]) for r in rows] == [
        (issues[0]["source"], "fracture", "fracture"),
        (issues[1]["source"], "no_fracture", "no_fracture"),
        (issues[0]["source"], "exclude", ""),  # k went back to the first row
    ]
    assert {r["reviewer"] for r in rows} == {"tester"}
    # n: a note on the current film (the second row, where x moved to) typed into the page's prompt; a comma and a
    # quote in it must survive the CSV, and the note keeps the film's decision
    note = 'cast, "re-check"'
    body.send_keys("n")
    _wait(lambda: _alert(browser) is not None)
    prompt = _alert(browser)
    prompt.send_keys(note)
    prompt.accept()
    _wait(lambda: len(_decisions(reviewed)) == 4)
    assert [(r["path"], r["decision"], r["new_label"], r["note"]) for r in _decisions(reviewed)][3:] == [
        (issues[1]["source"], "note", "", note)
    ]

    browser.refresh()  # a reload reads decisions.csv back: the table shows the latest decision per film
    _wait(lambda: browser.execute_script("return state.data !== null && state.shown.length > 0"))
    cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#rows td.decision")]
    assert cells == ["exclude", f"no_fracture ({note})"]

    # other lists: every film, filtered by a subgroup from the manifest's metadata
    browser.execute_script("selectList('films'); state.group = 'region=forearm'; render();")
    regions = browser.execute_script("return state.shown.map(r => state.data.films[r.film].region)")
    assert regions and set(regions) == {"forearm"}
    assert len(_drawn(browser)) == 1


@pytest.mark.slow
def test_evaluate_and_predict_folders(
    prepared_phantoms: Path, tiny_runs: dict[str, Path], phantom_coco: Path, tmp_path: Path
) -> None:
    """An evaluate folder shows every case with the detector's boxes; a predict folder its films by probability."""
    from fracturekit.evaluate import evaluate
    from fracturekit.predict import predict
    from fracturekit.review.data import load

    metrics = evaluate(
        prepared_phantoms, classifier=tiny_runs["classify"], detector=tiny_runs["detect"], out=tmp_path / "ev",
        bootstrap=20, device="cpu", imgsz=64,
    )  # fmt: skip
    ev = load(tmp_path / "ev")
    cases = list(csv.DictReader((tmp_path / "ev" / "cases.csv").open()))
    assert ev.kind == "evaluate" and len(ev.lists["cases"]["rows"]) == len(cases)
    assert all(ev.key(r["path"]) for r in cases)  # classifier (cls/) and detector (det/) paths: one film each
    detections = json.loads((tmp_path / "ev" / "detections_coco.json").read_text())
    per_film = Counter(d["image_id"] for d in detections)
    assert sum(len(f.pred) for f in ev.films.values()) == sum(min(n, 10) for n in per_film.values())
    assert metrics["split"] == "test" and {f.split for f in ev.films.values() if f.pred} == {"test"}

    predict(phantom_coco / "images", detector=tiny_runs["detect"], out=tmp_path / "pr", device="cpu", imgsz=64)
    pr = load(tmp_path / "pr")
    assert pr.kind == "predict" and len(pr.films) == len(list((phantom_coco / "images").glob("*.png")))
    assert all(f.file.is_file() and f.source == k for k, f in pr.films.items())
    srv = Server(tmp_path / "ev")
    try:
        assert srv.get("/api/image?path=" + cases[0]["path"]) == 200
        assert srv.get("/api/image?path=" + urllib.request.quote(str(phantom_coco / "metadata.csv"))) == 403
    finally:
        srv.stop()
