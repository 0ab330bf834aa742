from __future__ import annotations

import pytest

from tuner.hardware import parse_bytes, parse_gpus
from tuner.sim.hardware import make_host
from tuner.units import GiB, MiB


@pytest.mark.parametrize(
    ("spec", "count", "name", "gib", "bandwidth"),
    [
        ("2x24GiB", 2, "NVIDIA Simulated GPU 24 GiB", 24, 1008.0),
        ("2xRTX4090", 2, "NVIDIA GeForce RTX 4090", 23.99, 1008.0),
        ("8xA800-80GB", 8, "NVIDIA A800-SXM4-80GB", 80, 2039.0),
        ("4xGTX1070Ti", 4, "NVIDIA GeForce GTX 1070 Ti", 8, 256.3),
        ("1xH100", 1, "NVIDIA H100 80GB HBM3", 79.6, 3350.0),
        ("RTX3090", 1, "NVIDIA GeForce RTX 3090", 24, 936.2),
        ("1xRTX5090", 1, "NVIDIA GeForce RTX 5090", 31.8, 1792.0),
        ("RTX3060-12GB", 1, "NVIDIA GeForce RTX 3060", 12, 360.0),
        ("2xA100-80GB", 2, "NVIDIA A100-SXM4-80GB", 80, 2039.0),
        ("H200", 1, "NVIDIA H200", 140.4, 4800.0),
        ("RTX-PRO-6000", 1, "NVIDIA RTX PRO 6000 Blackwell Workstation Edition", 95.6, 1792.0),
        ("1xRTX3060-8GB", 1, "NVIDIA GeForce RTX 3060", 8, 240.0),
        ("RTX3070", 1, "NVIDIA GeForce RTX 3070", 8, 448.0),
        ("RTX3080-10GB", 1, "NVIDIA GeForce RTX 3080", 10, 760.3),
        ("RTX3080-12GB", 1, "NVIDIA GeForce RTX 3080", 12, 912.4),
        ("RTX4060", 1, "NVIDIA GeForce RTX 4060", 8, 272.0),
        ("RTX4060-Laptop", 1, "NVIDIA GeForce RTX 4060 Laptop GPU", 8, 256.0),
        ("RTX4060Ti-16GB", 1, "NVIDIA GeForce RTX 4060 Ti", 16, 288.0),
        ("RTX4070TiSuper", 1, "NVIDIA GeForce RTX 4070 Ti SUPER", 16, 672.0),
        ("RTX5070Ti", 1, "NVIDIA GeForce RTX 5070 Ti", 15.9, 896.0),
        ("2xL4", 2, "NVIDIA L4", 22.5, 300.0),
        ("L40S", 1, "NVIDIA L40S", 45, 864.0),
        ("A10", 1, "NVIDIA A10", 22.5, 600.0),
        ("A40", 1, "NVIDIA A40", 45, 695.8),
        ("RTX-A5000", 1, "NVIDIA RTX A5000", 24, 768.0),
        ("4xP40", 4, "Tesla P40", 24, 347.1),
        ("V100-PCIe-16GB", 1, "Tesla V100-PCIE-16GB", 16, 900.0),
    ],
)
def test_parse_gpus_known_forms(spec: str, count: int, name: str, gib: float, bandwidth: float) -> None:
    cards = parse_gpus(spec)
    assert len(cards) == count
    assert {c.name for c in cards} == {name}
    assert cards[0].memory_bytes / GiB == pytest.approx(gib, abs=0.05)
    assert cards[0].bandwidth_gbps == bandwidth
    assert cards[0].tflops > 0


def test_parse_gpus_mixed_sizes_and_unified_card() -> None:
    cards = parse_gpus("24GiB,12GiB")
    assert [c.memory_bytes for c in cards] == [24 * GiB, 12 * GiB]
    assert cards[1].bandwidth_gbps < cards[0].bandwidth_gbps  # a typical 12 GB card is slower
    spark = parse_gpus("1xDGX-Spark")[0]
    assert spark.unified and spark.memory_bytes == 128 * GiB
    assert make_host(gpus=[spark]).ram_bytes == 128 * GiB  # the host shares that pool
    assert parse_gpus("none") == []


@pytest.mark.parametrize("bad", ["3xFoo", "2x", "x24GiB", "24", "0x24GiB", "24GiB,,", "99xRTX4090"])
def test_parse_gpus_rejects_bad_values_quoting_them(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_gpus(bad)
    message = str(info.value)
    assert repr(bad) in message
    assert "2x24GiB" in message and "2xRTX4090" in message  # shows the valid forms


def test_parse_bytes_units() -> None:
    assert parse_bytes("64GiB") == 64 * GiB
    assert parse_bytes("16GB") == 16 * 10**9
    assert parse_bytes("1TiB") == 1024 * GiB
    assert parse_bytes("512MiB") == 512 * MiB
    assert parse_bytes("2G") == 2 * GiB
    assert parse_bytes(1234) == 1234
    with pytest.raises(ValueError, match="'lots'"):
        parse_bytes("lots")


def test_host_defaults_and_validation() -> None:
    host = make_host()
    assert host.ram_bytes == 64 * GiB and host.bandwidth_gbps == 80.0 and host.cpu_tflops > 0
    assert make_host("1TiB", 204.8).ram_bytes == 1024 * GiB
    with pytest.raises(ValueError, match="host RAM"):
        make_host("512MiB")
    with pytest.raises(ValueError, match="bandwidth"):
        make_host(None, -3)
