"""Multi-GPU instance layouts: one `ollama serve` spread over every GPU, or separate instances, one per GPU
subset, each on its own port; which to deploy, and the files that deploy it. Pure.

    gpu_ids(log_text)                       the GPUs an `ollama serve` startup log lists ("inference compute")
    candidate_layouts(ids, slots_per_gpu)   spread (1 x all, OLLAMA_SCHED_SPREAD=1), then N/k instances of k
                                            GPUs for every k that divides N (4 GPUs: 2 x 2, 4 x 1)
    choose_layout(throughputs)              the layout to deploy (a spread instance unless separate ones are
                                            more than LAYOUT_TIE faster: one server is simpler to run)
    layout_files(layout, settings)          {relative path: text}: per instance an env file, a systemd drop-in
                                            for the ollama@.service template, docker flags; the template;
                                            an nginx upstream that balances the ports; LAYOUT.md

Every layout holds the same slots per GPU (OLLAMA_NUM_PARALLEL = slots_per_gpu x its GPUs), so the
comparison under the same total concurrent load is between placements, not slot counts. GPUs are named by
the ids the server logged (GPU-<uuid> for CUDA, which CUDA_VISIBLE_DEVICES takes and which do not change
with the device order), or by index where the log gives none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tuner.serverenv import ServerSettings, render_docker_flags, render_env_file, render_systemd_dropin

LAYOUT_TIE = 0.05  # separate instances must beat the spread instance by more than 5 %
BASE_PORT = 11435  # instance i listens on BASE_PORT + i; the balancer takes Ollama's own 11434
BALANCER_PORT = 11434
_COMPUTE = re.compile(r'msg="inference compute"(?P<rest>.*)')
_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def gpu_ids(log_text: str) -> list[str]:
    """The GPUs an `ollama serve` found, from its startup log's `inference compute` lines (one per GPU; a
    `library=cpu` line means none): their ids (GPU-<uuid>) where logged, else their indices."""
    ids: list[str] = []
    for m in _COMPUTE.finditer(log_text):
        fields = {k: v.strip('"') for k, v in _FIELD.findall(m.group("rest"))}
        if fields.get("library", "").lower() == "cpu":
            continue
        gid = fields.get("id", "")
        ids.append(gid if gid.upper().startswith("GPU-") else str(len(ids)))
    return list(dict.fromkeys(ids))


@dataclass(frozen=True)
class Instance:
    gpus: tuple[str, ...]  # CUDA_VISIBLE_DEVICES entries
    num_parallel: int

    @property
    def spread(self) -> bool:
        return len(self.gpus) > 1


@dataclass(frozen=True)
class Layout:
    name: str  # "spread" (one instance over every GPU) or "4x1", "2x2" (instances x GPUs each)
    instances: tuple[Instance, ...]

    @property
    def separate(self) -> bool:
        return len(self.instances) > 1

    def describe(self) -> str:
        if not self.separate:
            return f"one instance spread over {len(self.instances[0].gpus)} GPUs"
        each = len(self.instances[0].gpus)
        return f"{len(self.instances)} separate instances of {each} GPU{'s' if each > 1 else ''} each"


def candidate_layouts(ids: Sequence[str], slots_per_gpu: int) -> list[Layout]:
    """The spread instance first, then every even split into separate instances (largest subsets first).
    ValueError for fewer than two GPUs (nothing to compare) or slots_per_gpu below 1."""
    if len(ids) < 2:
        raise ValueError(f"instance layouts need at least 2 GPUs; the server found {len(ids)}")
    if slots_per_gpu < 1:
        raise ValueError(f"slots per GPU {slots_per_gpu} must be at least 1")
    n = len(ids)
    out = [Layout("spread", (Instance(tuple(ids), slots_per_gpu * n),))]
    for k in range(n - 1, 0, -1):
        if n % k:
            continue
        groups = [tuple(ids[i : i + k]) for i in range(0, n, k)]
        out.append(Layout(f"{n // k}x{k}", tuple(Instance(g, slots_per_gpu * k) for g in groups)))
    return out


def instance_env(
    instance: Instance, settings: ServerSettings, version: str, port: int | None
) -> dict[str, str]:
    """The server environment of one instance: the shared knobs, its slots, its GPUs, spread over them
    when it has several, and (for deployment) its loopback port."""
    knobs = ServerSettings(
        flash_attention=settings.flash_attention,
        kv_cache_type=settings.kv_cache_type,
        num_parallel=instance.num_parallel,
        sched_spread=True if instance.spread else None,
    )
    env = {**knobs.env(version), "CUDA_VISIBLE_DEVICES": ",".join(instance.gpus)}
    if port is not None:
        env["OLLAMA_HOST"] = f"127.0.0.1:{port}"
    return env


def choose_layout(throughputs: Sequence[float | None], layouts: Sequence[Layout]) -> int | None:
    """Index of the layout to deploy: the most aggregate tok/s at its serving pick, except that the spread
    instance (one server, all the memory for one model) stays unless a separate layout beats it by more
    than LAYOUT_TIE. None when no layout has a serving pick."""
    scored = [(t, i) for i, t in enumerate(throughputs) if t is not None]
    if not scored:
        return None
    best_t, best = max(scored)
    spread = next((i for i, lay in enumerate(layouts) if not lay.separate), None)
    if spread is not None and throughputs[spread] is not None and best != spread:
        if best_t <= (throughputs[spread] or 0.0) * (1 + LAYOUT_TIE):
            return spread
    return best


TEMPLATE_UNIT = """\
# Written by autotune: one Ollama server per GPU subset. Copy to /etc/systemd/system/ollama@.service,
# the drop-ins beside it, then: systemctl daemon-reload && systemctl enable --now {units}
[Unit]
Description=Ollama instance %i
After=network-online.target

[Service]
ExecStart=/usr/local/bin/ollama serve
User=ollama
Group=ollama
Restart=always
RestartSec=3

[Install]
WantedBy=default.target
"""


def _docker_flags(env: dict[str, str], port: int) -> str:
    """`docker run` flags for one instance: its GPUs (--gpus, not CUDA_VISIBLE_DEVICES, inside a container),
    its port on the host's loopback, the knobs."""
    gpus = env.get("CUDA_VISIBLE_DEVICES", "")
    knobs = {k: v for k, v in env.items() if k not in ("CUDA_VISIBLE_DEVICES", "OLLAMA_HOST")}
    return f"--gpus '\"device={gpus}\"' -p 127.0.0.1:{port}:11434 {render_docker_flags(knobs)}".rstrip()


def _nginx(ports: Sequence[int]) -> str:
    servers = "".join(f"    server 127.0.0.1:{p};\n" for p in ports)
    return (
        "# Written by autotune: one address for the Ollama instances. Include it in nginx's http block.\n"
        "# least_conn sends each request to the instance with the fewest open ones.\n"
        f"upstream ollama_instances {{\n    least_conn;\n{servers}}}\n"
        f"server {{\n    listen 127.0.0.1:{BALANCER_PORT};\n"
        "    location / {\n        proxy_pass http://ollama_instances;\n        proxy_buffering off;\n"
        "        proxy_read_timeout 3600s;\n    }\n}\n"
    )


def layout_files(layout: Layout, settings: ServerSettings, version: str, summary: str) -> dict[str, str]:
    """{path relative to the output folder: text} deploying `layout`; `summary` is the measured comparison
    (a line per layout) for LAYOUT.md."""
    files: dict[str, str] = {}
    ports = [BASE_PORT + i for i in range(len(layout.instances))]
    rows = []
    for i, (inst, port) in enumerate(zip(layout.instances, ports, strict=True)):
        env = instance_env(inst, settings, version, port)
        files[f"instances/instance-{i}.env"] = render_env_file(env)
        files[f"instances/ollama@{i}.service.d/autotune.conf"] = render_systemd_dropin(env)
        files[f"instances/docker-run-flags-{i}.txt"] = _docker_flags(env, port) + "\n"
        rows.append(f"| {i} | {','.join(inst.gpus)} | 127.0.0.1:{port} | {inst.num_parallel} |")
    units = " ".join(f"ollama@{i}" for i in range(len(ports)))
    files["instances/ollama@.service"] = TEMPLATE_UNIT.format(units=units)
    files["instances/nginx-ollama.conf"] = _nginx(ports)
    files["instances/LAYOUT.md"] = (
        f"# Instance layout: {layout.describe()}\n\n{summary}\n\n"
        "| instance | GPUs (CUDA_VISIBLE_DEVICES) | address | OLLAMA_NUM_PARALLEL |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\nEach instance is its own `ollama serve` and loads its own copy of the model on its GPUs.\n\n"
        "- **Shell:** `set -a; . instances/instance-0.env; set +a; ollama serve` (one per instance).\n"
        f"- **systemd:** `ollama@.service` and the `ollama@N.service.d/` drop-ins into /etc/systemd/system/, "
        f"then `systemctl daemon-reload && systemctl enable --now {units}` (stop the stock `ollama` service "
        f"first: it holds port {BALANCER_PORT}).\n"
        "- **Docker:** `eval docker run -d $(cat instances/docker-run-flags-0.txt) -v ollama:/root/.ollama "
        "--name ollama-0 ollama/ollama`, one per instance (eval: the --gpus value is quoted, as Docker wants a "
        "list of devices).\n\n"
        "## Load balancing across the ports\n\n"
        "Ollama does not balance between servers: clients must spread their requests over the instances, as "
        "autotune did when it measured them (the concurrent streams divided evenly among the ports). "
        f"`nginx-ollama.conf` puts them behind one address, 127.0.0.1:{BALANCER_PORT} (Ollama's usual port, so "
        "clients keep their setting), sending each request to the instance with the fewest open requests "
        "(least_conn) and streaming replies unbuffered. Any balancer that does the same (HAProxy `leastconn`, "
        "LiteLLM's router) works; a client of its own can instead pin each conversation to one port.\n"
    )
    return files
