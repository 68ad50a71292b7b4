"""`troc run` with an encrypted key and no passphrase (no TROC_PASSPHRASE, no
file, no terminal): the web app asks for it once, then the node starts on
the same port with the same session (a real process)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import httpx

from tests.e2e.harness import PASSPHRASE, TROC, Member, env


def test_the_web_app_unlocks_an_encrypted_key_once(tmp_path: Path) -> None:
    home = tmp_path / "ana"
    subprocess.run([*TROC, "--home", str(home), "init"], env=env(), check=True, timeout=60)
    e = env()
    del e["TROC_PASSPHRASE"]
    e["TROC_WEB"] = "127.0.0.1:0"
    e.pop("TROC_NO_WEB", None)
    err_path = tmp_path / "run.err"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [*TROC, "--home", str(home), "--json", "run", "--listen", "/ip4/127.0.0.1/tcp/0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=e,
        )
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            found = re.search(r"unlock it in the browser: (\S+)", err_path.read_text())
            url = found.group(1) if found else None
            time.sleep(0.1)
        assert url is not None, err_path.read_text()
        base = url.split("/login")[0]
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.get("/").status_code == 401  # no session yet
            assert client.get(url).status_code == 303
            page = client.get("/")
            assert 'name="passphrase"' in page.text
            csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
            assert csrf is not None
            token = {"csrf": csrf.group(1)}
            assert client.post("/unlock", data={"passphrase": PASSPHRASE}).status_code == 403
            wrong = client.post("/unlock", data={**token, "passphrase": "not it"})
            assert wrong.status_code == 423
            assert "wrong passphrase" in wrong.text
            assert proc.poll() is None
            right = client.post("/unlock", data={**token, "passphrase": PASSPHRASE})
            assert right.status_code == 200
            assert 'id="unlocked"' in right.text
            assert proc.stdout is not None
            info = json.loads(proc.stdout.readline())  # the node is running now
            assert info["web"].startswith(base + "/login?token=")
            # The same session, on the same port, now reaches the node.
            me = client.post("/api/op/whoami", json={}, headers={"x-csrf-token": token["csrf"]})
            assert me.status_code == 200
            assert me.json()["result"]["member"] == info["member"]
    finally:
        code = Member("ana", home, proc=proc).stop()  # SIGTERM by its PID, then SIGKILL
    assert code == 0
    assert not os.path.exists(home / "control.sock")
