from __future__ import annotations

import subprocess
import sys

import pytest

from tuner.sim.__main__ import main


@pytest.mark.parametrize(
    ("args", "quoted"),
    [
        (["--gpus", "3xFoo"], "'3xFoo'"),
        (["--host-ram", "lots"], "'lots'"),
        (["--ollama-version", "newest"], "'newest'"),
        (["--noise", "x"], "'x'"),
        (["--local", "foo:bar"], "'foo:bar'"),
        (["--num-parallel", "0"], "0"),
    ],
)
def test_bad_values_exit_2_with_one_line(
    args: list[str], quoted: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        code = main(["--port", "0", *args])
        raise SystemExit(code)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and quoted in err and "Traceback" not in err


def test_serves_and_prints_the_url() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner.sim", "--port", "0", "--gpus", "2xRTX4090", "--noise", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line and "RTX 4090" in line
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0
