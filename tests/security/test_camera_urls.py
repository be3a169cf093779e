"""Hostile camera URLs (issue 22, finding 1 and the camera-URL bullet of section 2).

FFmpeg writes a camera URL verbatim into its RTSP request line, so a CR/LF in it is a request of
the URL's author to whatever listens at its host and port: an operator turned themselves into an
admin by adding a camera at Redis's port with an HSET in its path. Each attack is replayed here:
through every way a camera enters (console API, CLI, YAML, registry records), straight at
FFmpeg, at Vigil's own services and link-local addresses, with protocols Vigil does not use, with
local files from the console, and with credentials in a URL's query or path.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import httpx
import pytest
import redis

from pipeline.camera_sim import footage
from pipeline.cameras.registry import CameraRegistryError, spec_from_record
from pipeline.cameras.spec import CameraSpec
from pipeline.cli import main as vigil
from pipeline.cli.cameras import load_camera_file
from pipeline.common.config import ConfigError
from pipeline.common.redis import RedisKeys
from pipeline.common.urls import hide_credentials, mask_url
from pipeline.config import parse_config
from pipeline.ingest.capture import CameraReader, CameraUnavailable, probe_camera
from pipeline.ingest.live import safe_error
from pipeline.ingest.worker import IngestWorker
from pipeline.record.index import SegmentIndex
from pipeline.record.service import RecorderService
from tests.support.config import KAFKA, REDIS_URL, make_config
from tests.support.console import ConsoleStack, console_stack

REDIS = urlsplit(REDIS_URL)
REDIS_DB = int(REDIS.path.strip("/") or 0)
MQTT = "127.0.0.1:1883"
SECRET = "Qs3cretZ"  # in a query or path token of a camera URL: must never come back


def redis_injection(key: str) -> str:
    """The issue's URL: Redis reads FFmpeg's RTSP request line by line, so the lines smuggled
    into the path are Redis commands (the SELECT: the tests' Redis database)."""
    return (
        f"rtsp://{REDIS.hostname}:{REDIS.port}/a\r\nSELECT {REDIS_DB}\r\nHSET {key} role admin\r\nb"
    )


HOSTILE = [
    "rtsp://127.0.0.1:8554/a\r\nHSET k role admin\r\nb",
    "rtsp://127.0.0.1:8554/a\nb",
    "rtsp://127.0.0.1:8554/a\rb",
    "rtsp://127.0.0.1:8554/a\tb",
    "rtsp://127.0.0.1:8554/a b",
    "rtsp://127.0.0.1:8554/a\x00b",
    "rtsp://127.0.0.1:8554/a\x7fb",
    "rtsp://127.0.0.1:8554/a\u00a0b",  # no-break space
    "rtsp://127.0.0.1:8554/a\u2028b",  # line separator
    "http://127.0.0.1:8080/a\r\nX-Injected: 1\r\n",
    "rtsp://admin%0D%0AX-Injected:%201:pw@127.0.0.1:8554/a",  # FFmpeg decodes the userinfo
]

LINK_LOCAL = [
    "rtsp://169.254.169.254/latest/meta-data",
    "http://169.254.169.254:80/latest/meta-data",
    "rtsp://[fe80::1]/x",
    "rtsp://[fe80::1%25eth0]:554/x",
    "rtsp://[::ffff:169.254.169.254]/x",
    "rtsp://[::ffff:a9fe:a9fe]/x",
    "rtsp://2852039166/x",  # 169.254.169.254 as one number
    "rtsp://0xa9fea9fe/x",
    "rtsp://169.254.43518/x",
    "http://metadata.google.internal/computeMetadata/v1/",
]


GOOD = "rtsp://127.0.0.1:8554/sub"


def _refused_everywhere(url: str, tmp_path: Path, capsys, reason: str) -> None:
    """``url`` is refused as a camera's ``url`` and as its ``record_url`` (the main stream the
    recorder opens) by the model, the YAML config, ``vigil cameras apply``, ``vigil cameras
    add`` and a registry record, each error naming the field and the camera URL."""
    for field in ("url", "record_url"):
        cam = {"id": "cam1", "url": GOOD, field: url}
        with pytest.raises(ValueError, match=reason) as e:
            CameraSpec(**cam)
        assert field in str(e.value)
        with pytest.raises(ConfigError, match=reason) as e:
            parse_config({"cameras": [cam]}, "vigil.yaml")
        assert f"cameras.0.{field}" in str(e.value)
        cams = tmp_path / "cams.json"  # JSON is YAML, and keeps the control characters as written
        cams.write_text(json.dumps({"cameras": [cam]}))
        with pytest.raises(ConfigError, match=reason):
            load_camera_file(str(cams))
        args = [url] if field == "url" else [GOOD, "--record-url", url]
        assert vigil(["cameras", "add", "--bootstrap", "127.0.0.1:1", "cam1", *args]) == 2
        assert reason in capsys.readouterr().err
        with pytest.raises(CameraRegistryError, match=reason) as e:
            spec_from_record(b"cam1", json.dumps(cam).encode())
        assert field in str(e.value)


@pytest.mark.parametrize("url", HOSTILE)
def test_control_characters_and_whitespace_refused_wherever_a_camera_enters(url, tmp_path, capsys):
    _refused_everywhere(url, tmp_path, capsys, "control character")


@pytest.mark.parametrize("url", LINK_LOCAL)
def test_link_local_and_metadata_hosts_refused_wherever_a_camera_enters(url, tmp_path, capsys):
    _refused_everywhere(url, tmp_path, capsys, "link-local or cloud metadata host")


def test_ordinary_camera_urls_still_accepted():
    for url in (
        "rtsp://admin:pw@192.168.1.20:554/Streaming/Channels/101",
        "rtsp://127.0.0.1:8554/door",
        "rtsps://cam.example.com/live",
        "http://10.0.0.7/video.mjpg",
        "rtsp://[2001:db8::7]/x",
        "rtsp://169.255.0.1/x",  # next to link-local, not in it
    ):
        assert CameraSpec(id="cam1", url=url).url == url


@pytest.mark.parametrize(
    "url",
    [
        "rtsp://127.0.0.1:9092/x",  # Kafka
        "rtsp://localhost:9092/x",
        "rtsp://127.1:9092/x",
        "rtsp://[::1]:9092/x",
        "rtsp://0.0.0.0:9092/x",
        "rtsp://127.0.0.1:6379/x",  # Redis
        "http://LOCALHOST:6379/x",
        "rtsp://[::ffff:127.0.0.1]:6379/x",
        "rtsp://127.0.0.1:1883/x",  # the MQTT sink's broker
    ],
)
def test_vigils_own_services_refused_as_cameras_in_yaml_and_cli(url, tmp_path, capsys):
    services = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092"},
        "redis": {"url": "redis://127.0.0.1:6379/0"},
        "notify": {"sinks": [{"id": "ha", "type": "mqtt", "url": f"mqtt://{MQTT}"}]},
    }
    with pytest.raises(ConfigError, match="one of Vigil's own services") as e:
        parse_config({**services, "cameras": [{"id": "cam1", "url": url}]}, "vigil.yaml")
    assert "cameras.0 (cam1)" in str(e.value)
    with pytest.raises(ConfigError, match="one of Vigil's own services") as e:
        parse_config({**services, "cameras": [{"id": "cam1", "url": GOOD, "record_url": url}]})
    assert "cameras.0 (cam1).record_url" in str(e.value)
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text(json.dumps(services))
    cams = tmp_path / "cams.yaml"
    cams.write_text(json.dumps({"cameras": [{"id": "cam1", "url": url}]}))
    assert vigil(["cameras", "add", "-c", str(cfg), "cam1", url]) == 2
    assert "one of Vigil's own services" in capsys.readouterr().err
    assert vigil(["cameras", "apply", "-c", str(cfg), "-f", str(cams)]) == 2
    assert "one of Vigil's own services" in capsys.readouterr().err
    assert vigil(["cameras", "add", "-c", str(cfg), "cam1", GOOD, "--record-url", url]) == 2
    assert "one of Vigil's own services" in capsys.readouterr().err
    # the same host on another port is a camera like any other
    other = url.replace(":9092", ":8554").replace(":6379", ":8554").replace(":1883", ":8554")
    assert parse_config({**services, "cameras": [{"id": "cam1", "url": other}]}).cameras


def test_worker_refuses_a_registry_record_naming_a_service_and_keeps_its_cameras(caplog):
    """A record written to the registry topic by anyone (not only the console or the CLI)."""
    cfg = make_config(KAFKA)
    worker = IngestWorker(cfg, worker_id="w", forbidden_endpoints={("127.0.0.1", 6379)})
    good = CameraSpec(id="door", url="rtsp://127.0.0.1:9/door")
    try:
        worker.reconcile({"door": good})
        reader = worker._readers["door"]
        evil = {
            "door": CameraSpec(id="door", url="rtsp://localhost:6379/x"),
            "yard": CameraSpec(id="yard", url="rtsp://127.0.0.1:6379/y"),
            # the recorder would open record_url: the definition is refused whole
            "lane": CameraSpec(
                id="lane", url="rtsp://127.0.0.1:9/l", record_url="rtsp://127.0.0.1:6379/m"
            ),
        }
        with caplog.at_level(logging.ERROR):
            worker.reconcile(evil)
        assert worker.cameras == ["door"]
        assert worker._readers["door"] is reader and reader.spec == good  # left as it was
        assert "camera yard refused" in caplog.text and "one of Vigil's own services" in caplog.text
        assert "camera lane refused: record_url" in caplog.text
    finally:
        for r in worker._readers.values():
            r.stop()


def test_recorder_refuses_a_registry_record_whose_record_url_names_a_service(tmp_path, caplog):
    """The recorder opens ``record_url``: a registry record pointing it (or ``url``) at Redis is
    refused like a hostile ``url``, and the camera's running recorder is left as it was."""
    cfg = make_config(KAFKA, recordings={"dir": str(tmp_path)})
    service = RecorderService(
        cfg.kafka,
        cfg.recordings,
        SegmentIndex(redis.Redis.from_url(REDIS_URL), RedisKeys("unused:")),
        recorder_id="r",
        forbidden_endpoints={("127.0.0.1", 6379)},
    )
    on = {"enabled": True}
    good = CameraSpec(id="door", url="rtsp://127.0.0.1:9/sub", record_url=GOOD, record=on)
    try:
        service.reconcile({"door": good})
        running = service.recorder("door")
        assert running is not None and running.url == GOOD
        evil = {
            "door": good.model_copy(update={"record_url": "rtsp://localhost:6379/x"}),
            "yard": CameraSpec(
                id="yard", url=GOOD, record_url="rtsp://127.0.0.1:6379/y", record=on
            ),
            "gate": CameraSpec(id="gate", url="rtsp://[::1]:6379/y", record=on),
        }
        with caplog.at_level(logging.ERROR):
            service.reconcile(evil)
        assert service.cameras == ["door"] and service.recorder("door") is running
        for cid in ("yard", "gate", "door"):
            assert f"camera {cid} refused" in caplog.text
        assert (
            "record_url: camera url" in caplog.text and "one of Vigil's own services" in caplog.text
        )
    finally:
        service.close()


# -- FFmpeg ---------------------------------------------------------------------------------------


@pytest.mark.integration
def test_crlf_url_handed_straight_to_ffmpeg_sends_no_redis_command():
    """Below validation: the capture itself never hands FFmpeg a URL with a line break."""
    client = redis.Redis.from_url(REDIS_URL)
    key = f"camurl-test:{uuid.uuid4().hex[:8]}:user:op"
    client.hset(key, "role", "operator")
    try:
        with pytest.raises(CameraUnavailable):
            probe_camera(redis_injection(key), 3.0, 3.0)
        time.sleep(0.5)
        assert client.hget(key, "role") == b"operator"
    finally:
        client.delete(key)


def test_ffmpeg_refuses_protocols_vigil_does_not_use():
    """concat:/subfile: and friends never pass validation (unsupported scheme); FFmpeg's
    protocol whitelist refuses them too, should a URL ever reach it another way."""
    clip = str(footage("people-detection.mp4"))
    if not Path(clip).exists():
        pytest.fail(f"footage {clip} missing: set VIGIL_ASSETS to the shared assets folder")
    assert probe_camera(clip, 5.0, 5.0)[0] > 0  # file cameras still play
    assert probe_camera(f"file:{clip}", 5.0, 5.0)[0] > 0
    for url in (f"concat:{clip}", f"subfile,,start,0,end,0,,:{clip}", f"concat:{clip}|{clip}"):
        with pytest.raises(CameraUnavailable):
            probe_camera(url, 5.0, 5.0)
        with pytest.raises(ValueError, match="unsupported scheme|no such file"):
            CameraSpec(id="cam1", url=url)


def test_network_camera_cannot_make_ffmpeg_read_a_local_file(tmp_path, monkeypatch):
    """An HTTP "camera" serving an HLS playlist whose segment is a local file: with ``file`` in
    a network camera's whitelist FFmpeg plays the worker's own files (recorded footage, or any
    file that demuxes) to whoever added the camera. Network cameras get no ``file`` protocol."""
    clip = footage("people-detection.mp4")
    (tmp_path / "cam.m3u8").write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile://{clip}\n#EXT-X-ENDLIST\n"
    )
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/cam.m3u8"
    try:
        assert CameraSpec(id="cam1", url=url).url == url  # a valid camera URL...
        with pytest.raises(CameraUnavailable):
            probe_camera(url, 5.0, 5.0)  # ...that reads no local file
        # the playlist itself works: with file allowed, FFmpeg plays the local clip through it
        monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "protocol_whitelist;file,http,tcp")
        cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
        assert cap.isOpened() and cap.read()[0]
        cap.release()
    finally:
        server.shutdown()


@pytest.mark.integration  # the RTSP camera simulator
def test_rtsp_cameras_still_open_with_the_whitelist(camera_sim):
    sim = camera_sim("people-detection.mp4")
    width, height, _ = probe_camera(sim.urls["people-detection"], 10.0, 10.0)
    assert width > 0 and height > 0


# -- credentials in the query or path -------------------------------------------------------------

QUERY_URL = f"rtsp://127.0.0.1:9/stream?user=admin&pwd={SECRET}"
PATH_URL = f"rtsp://127.0.0.1:9/user=admin_password={SECRET}_channel=1_stream=0.sdp"


def test_query_and_path_credentials_masked_for_display():
    for url in (QUERY_URL, PATH_URL, f"rtsp://u:pw@127.0.0.1:9/live;pass={SECRET}?x#{SECRET}"):
        spec = CameraSpec(id="cam1", url=url)
        for text in (str(spec), spec.safe_url, mask_url(url), hide_credentials(url)):
            assert SECRET not in text and "admin" not in text, text
    assert mask_url(QUERY_URL) == "rtsp://127.0.0.1:9/stream?***"
    assert mask_url(PATH_URL) == "rtsp://127.0.0.1:9/***"
    assert mask_url("rtsp://127.0.0.1:9/live/ch1") == "rtsp://127.0.0.1:9/live/ch1"
    # an FFmpeg error quoting the query or the path token outside the URL
    err = f"{QUERY_URL}: 401 Unauthorized (pwd={SECRET})"
    assert safe_error(err, QUERY_URL) == "rtsp://127.0.0.1:9/stream?***: 401 Unauthorized (pwd=***)"
    err = f"method DESCRIBE failed: /user=admin_password={SECRET}_channel=1_stream=0.sdp: 401"
    assert safe_error(err, PATH_URL) == "method DESCRIBE failed: /***: 401"


def test_query_and_path_credentials_never_logged(caplog):
    reader = CameraReader(
        CameraSpec(id="cam1", url=QUERY_URL), fps=1, open_timeout_s=1, backoff_max_s=0.2
    )
    with caplog.at_level(logging.DEBUG):
        reader.start()
        deadline = time.monotonic() + 15
        while reader.stats.state != "backoff" and time.monotonic() < deadline:
            time.sleep(0.05)
        reader.stop(join_timeout=5)
        with pytest.raises(CameraUnavailable) as e:
            probe_camera(PATH_URL, 1.0, 1.0)
    assert "cannot open stream" in caplog.text  # the reader's line was written...
    assert SECRET not in caplog.text  # ...without the secret
    assert "cannot open" in str(e.value) and SECRET not in str(e.value)


# -- through the console ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory) -> Iterator[ConsoleStack]:
    with console_stack(
        kafka_bootstrap,
        tmp_path_factory.mktemp("console"),
        notify={"sinks": [{"id": "ha", "type": "mqtt", "url": f"mqtt://{MQTT}"}]},
    ) as s:
        yield s


def login(stack: ConsoleStack, role: str) -> httpx.Client:
    return stack.login(role, timeout=60)


def _detail(r: httpx.Response) -> str:
    return json.dumps(r.json()["detail"])


@pytest.mark.integration
def test_operator_cannot_become_admin_through_a_camera_url(stack):
    op = login(stack, "operator")
    assert op.post("/api/cameras", json={"id": "keep", "url": "rtsp://127.0.0.1:9/k"}).is_success
    role_key = stack.users.keys.console("user:operator")
    url = redis_injection(role_key)
    answers = [
        op.post(f"/api/cameras?check={check}", json={"id": "evil", **body})
        for check in ("true", "false")
        for body in ({"url": url}, {"url": "rtsp://127.0.0.1:9/e", "record_url": url})
    ]
    time.sleep(0.5)
    assert stack.users.client.hget(role_key, "role") == b"operator"
    for r in answers:
        assert r.status_code == 422, r.text
        assert "control character or whitespace" in _detail(r)
    assert login(stack, "operator").get("/api/me").json()["role"] == "operator"
    assert op.get("/api/cameras/evil").status_code == 404
    assert op.get("/api/cameras/keep").status_code == 200  # the running camera is untouched


@pytest.mark.integration
def test_console_refuses_vigils_services_and_link_local_hosts(stack):
    op = login(stack, "operator")
    kafka = stack.cfg.kafka.bootstrap_servers.split(",")[0]
    own = [
        f"rtsp://{kafka}/x",
        f"rtsp://{REDIS.hostname}:{REDIS.port}/x",
        f"rtsp://localhost:{REDIS.port}/x",
        f"http://{MQTT}/x",
    ]
    for url in own + LINK_LOCAL:
        for body in ({"url": url}, {"url": "rtsp://127.0.0.1:9/k", "record_url": url}):
            r = op.post("/api/cameras?check=true", json={"id": "probe", **body})
            assert r.status_code == 422, (url, r.text)
            assert "own services" in _detail(r) or "link-local" in _detail(r), r.text
    assert op.get("/api/cameras/probe").status_code == 404


@pytest.mark.integration
def test_console_refuses_file_cameras_without_telling_whether_they_exist(stack, tmp_path):
    op = login(stack, "operator")
    existing = tmp_path / "clip.mp4"
    existing.write_bytes(Path(footage("people-detection.mp4")).read_bytes()[:4096])
    missing = tmp_path / "no-such-clip.mp4"
    answers = []
    for url in (str(existing), str(missing), f"file://{existing}", f"file://{missing}"):
        for body in ({"url": url}, {"url": "rtsp://127.0.0.1:9/r", "record_url": url}):
            r = op.post("/api/cameras", json={"id": "replay", **body})
            assert r.status_code == 422, r.text
            answers.append(r.json()["detail"][0]["msg"])
    assert len(set(answers)) == 1 and "allow_file_cameras" in answers[0]
    assert str(tmp_path) not in answers[0]
    stack.cfg.console.allow_file_cameras = True
    try:
        r = op.post("/api/cameras", json={"id": "replay", "url": str(existing)})
        assert r.status_code == 201, r.text
        r = op.post("/api/cameras", json={"id": "replay2", "url": str(missing)})
        assert r.status_code == 422 and "no such file" in _detail(r)
    finally:
        stack.cfg.console.allow_file_cameras = False
        op.delete("/api/cameras/replay")


@pytest.mark.integration
def test_console_never_shows_query_or_path_credentials(stack):
    op, viewer = login(stack, "operator"), login(stack, "viewer")
    answers = []
    for cid, url in (("qcam", QUERY_URL), ("pcam", PATH_URL)):
        r = op.post("/api/cameras", json={"id": cid, "url": url})
        assert r.status_code == 201, r.text
        answers += [r.text, viewer.get(f"/api/cameras/{cid}").text]
        r = op.post("/api/cameras?check=true", json={"id": f"{cid}2", "url": url})
        assert r.status_code == 422 and "cannot open" in r.text
        answers.append(r.text)
    # the same URLs as a camera's main stream (record_url), with a password
    main = {"id": "mcam", "url": "rtsp://127.0.0.1:9/sub", "record_url": QUERY_URL}
    r = op.post("/api/cameras", json=main)
    assert r.status_code == 201, r.text
    answers += [r.text, viewer.get("/api/cameras/mcam").text]
    r = op.post("/api/cameras", json={**main, "record_url": f"rtsp://u:{SECRET}@127.0.0.1:9/m"})
    assert r.status_code == 201, r.text
    answers.append(r.text)
    listed = viewer.get("/api/cameras")
    assert {c["url"] for c in listed.json() if c["id"] in ("qcam", "pcam")} == {
        "rtsp://127.0.0.1:9/stream?***",
        "rtsp://127.0.0.1:9/***",
    }
    assert [c["record_url"] for c in listed.json() if c["id"] == "mcam"] == [
        "rtsp://***@127.0.0.1:9/m"
    ]
    for text in [*answers, listed.text]:
        assert SECRET not in text, text
