#!/bin/bash
# One device call (4 GPUs): 2 SGLang 0.5.17 prefill servers + 2 PPD decode servers
# (python -m sglang_ppd.worker), one per GPU, Mooncake (TCP) between them, then
# benchmarks/gpu/cluster_2p2d.py run: each router (sglang_ppd policies, the Rust sglang_router in PD
# mode) in turn in front of the same servers, Azure and ShareGPT multi-turn replays.
#
# usage (device, repo root, gpu_bundle/ carried with gpu_bundle/sglang_router.tar.xz; see
# benchmarks/gpu_2p2d.md):
#   bash benchmarks/gpu/cluster_2p2d.sh [DEADLINE_S] 2>&1 | tee $OUT/cluster.log
# CPU dry run of the same orchestration with emulated workers (sglang-ppd emulate, time scale 1):
#   BACKEND=emulated DURATION_S=8 OUT=/tmp/c2 bash benchmarks/gpu/cluster_2p2d.sh 300
# Writes $OUT/results.tar.gz (runs.jsonl, runs/*.json, extras.json, router logs), refreshed after
# every run, and $OUT/server_logs.tar.gz at the end.
# KEEP_SERVERS=1: start the servers in their own session (setsid) and leave them running, with the
# results folder, for the next call on the same warm machine: that call finds them healthy, skips
# setup and start (~2 min of device time) and the runs already measured, and goes on with the plan.
set -u
set -m
DEADLINE=${1:-560}
BACKEND=${BACKEND:-sglang}
OUTROOT=${OUT:-/tmp/out}
KEEP=${KEEP_SERVERS:-0}
RES=/tmp/c2p2d; [ "$KEEP" = 1 ] || rm -rf $RES; mkdir -p $RES/logs $OUTROOT
T0=$SECONDS
END_EPOCH=$(( $(date +%s) + DEADLINE ))
log() { echo "[$(( SECONDS - T0 ))s] $*"; }
REPO=$PWD
LOGS=$RES/logs
# never NVLink multicast (KINDS.md); Mooncake over TCP, as the single-GPU validation
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export HF_HUB_OFFLINE=1 MC_FORCE_TCP=1 MOONCAKE_PROTOCOL=tcp SGLANG_HOST_IP=127.0.0.1 HOST_IP=127.0.0.1 PYTHONUNBUFFERED=1
# ports far apart: SGLang picks its NCCL port in [port+100, port+1000] and checks only that it is free
P_PORTS=(30100 31300); D_PORTS=(32500 33700)
PY=python3; command -v python3 >/dev/null || PY=python

pack() { ( cd $RES && tar czf $OUTROOT/results.tar.gz runs.jsonl runs extras.json logs/router_*.log 2>/dev/null ); }
PIDS=()
stop_all() { for p in "${PIDS[@]}"; do kill -- -$p 2>/dev/null; done; sleep 3; for p in "${PIDS[@]}"; do kill -9 -- -$p 2>/dev/null; done; }
finish() {
  [ "$KEEP" = 1 ] || stop_all
  pack
  ( cd $LOGS && tar czf $OUTROOT/server_logs.tar.gz *.log 2>/dev/null )
  if [ "$BACKEND" = sglang ] && [ -d ~/.triton/cache ]; then
    ( cd ~/.triton && tar czf /tmp/triton.tar.gz cache ) && [ $(stat -c %s /tmp/triton.tar.gz) -lt 15000000 ] && cp /tmp/triton.tar.gz $OUTROOT/triton.tar.gz
  fi
  ls -la $OUTROOT; }
trap finish EXIT

health() { $PY -c "import sys,urllib.request; urllib.request.urlopen(sys.argv[1] + '/health', timeout=2)" "$1" 2>/dev/null; }
wait_health() { local url=$1 to=$2 name=$3 pid=$4 t=$SECONDS
  while (( SECONDS - t < to )); do
    health $url && { log "$name healthy after $((SECONDS-t)) s"; return 0; }
    kill -0 $pid 2>/dev/null || { log "$name DIED"; grep -v "^\s*$" $LOGS/$name.log | tail -40; return 1; }
    sleep 2
  done
  log "$name TIMEOUT after $to s"; tail -30 $LOGS/$name.log; return 1; }

# without job control a background job is not a process-group leader, so setsid(1) execs in place
# and $! is the server itself, the leader of its new session (stop_all kills that session's group)
launch() { if [ "$KEEP" = 1 ]; then set +m; setsid "$@" & PIDS+=($!); set -m; else "$@" & PIDS+=($!); fi; }
all_healthy() { for port in ${P_PORTS[@]} ${D_PORTS[@]}; do health http://127.0.0.1:$port || return 1; done; }
# the environment the servers, routers and bench run with; on a GPU only once setup has unpacked
# /tmp/site (the model is written with the image's own packages, during the unpack)
project_env() {
  if [ "$BACKEND" = sglang ]; then
    export PYTHONPATH=/tmp/site:$REPO:$REPO/policies:/tmp/ppdmeta
    export SGLANG_IS_FLASHINFER_AVAILABLE=false RUST_ROUTER_PATH=/tmp/rustrouter
  else
    export PYTHONPATH=$REPO:$REPO/policies:${PYTHONPATH:-} RUST_ROUTER_PATH=${RUST_ROUTER_PATH:-/tmp/rustrouter}
  fi; }
if [ "$KEEP" = 1 ] && all_healthy; then
  log "servers of an earlier call are healthy: reusing them and $RES ($(ls $RES/runs 2>/dev/null | grep -c '[^s]\.json$') runs there)"
  # the servers' own pids are unknown here: wait_health below then only polls /health
  project_env
  TO=10
elif [ "$BACKEND" = sglang ]; then
  log "== env"
  nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version --format=csv,noheader
  nvidia-smi topo -m 2>/dev/null | head -8
  ls /dev/infiniband 2>/dev/null | head -3 | xargs echo "infiniband devices:"
  if [ -f gpu_bundle/triton.tar.gz ]; then mkdir -p ~/.triton && tar xzf gpu_bundle/triton.tar.gz -C ~/.triton; log "triton cache restored"; fi
  mkdir -p /tmp/site /tmp/rustrouter
  for t in core pd fi; do tar xJf gpu_bundle/$t.tar.xz -C /tmp/site & done
  tar xJf gpu_bundle/sglang_router.tar.xz -C /tmp/rustrouter &
  $PY benchmarks/gpu/make_model_8b.py /tmp/model > $LOGS/model.log 2>&1 &
  wait; tail -1 $LOGS/model.log
  # the router's own wheels the device image lacks (httptools); fetch them here with
  #   pip download httptools --python-version 3.12 --only-binary=:all: --no-deps -d gpu_bundle/wheels
  for w in gpu_bundle/wheels/*.whl; do [ -f "$w" ] && $PY -m zipfile -e "$w" /tmp/site; done
  # the project from the carried tree + a dist-info so the policy entry points resolve (validate_ppd.sh)
  $PY - <<'PYEOF'
import tomllib, pathlib
p = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]
d = pathlib.Path("/tmp/ppdmeta") / f"sglang_ppd-{p['version']}.dist-info"
d.mkdir(parents=True, exist_ok=True)
(d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: sglang-ppd\nVersion: {p['version']}\n")
eps = "".join(f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in e.items()) for g, e in p["entry-points"].items())
(d / "entry_points.txt").write_text(eps)
PYEOF
  project_env
  PYTHONPATH=/tmp/rustrouter:$PYTHONPATH $PY -c "import sglang_router, sglang_router.sglang_router_rs; print('sglang_router', sglang_router.__version__ if hasattr(sglang_router, '__version__') else '?')" 2>&1 | tail -1
  # fail here, not after the servers' start, if the router cannot import on this image
  $PY -c "import sglang_ppd.router.service" || { log "router does not import: missing wheel?"; exit 1; }
  log "setup done"
  BASE="--model-path /tmp/model --skip-tokenizer-init --host 127.0.0.1 --attention-backend triton --sampling-backend pytorch --grammar-backend none --disaggregation-transfer-backend mooncake"
  # one server per GPU, all four started at once (a decode server needs no prefill server to start)
  for i in 0 1; do
    CUDA_VISIBLE_DEVICES=$i launch $PY -m sglang.launch_server $BASE --mem-fraction-static 0.80 --port ${P_PORTS[$i]} \
      --disaggregation-mode prefill --disaggregation-bootstrap-port 899$((8 + i)) --disable-cuda-graph \
      --kv-events-config "{\"publisher\":\"zmq\",\"endpoint\":\"tcp://*:555$((8 - 2 * i))\"}" > $LOGS/P$i.log 2>&1
  done
  for i in 0 1; do
    CUDA_VISIBLE_DEVICES=$((2 + i)) launch $PY -m sglang_ppd.worker $BASE --mem-fraction-static 0.80 --port ${D_PORTS[$i]} \
      --disaggregation-mode decode --cuda-graph-max-bs 64 \
      --kv-events-config "{\"publisher\":\"zmq\",\"endpoint\":\"tcp://*:555$((7 - 2 * i))\"}" \
      --ppd-telemetry-endpoint "tcp://*:2930$i" --ppd-tbt-slo-ms 30 --ppd-min-chunk-len 128 --ppd-max-chunk-len 4096 \
      --ppd-prior-mixed-overhead-ms 4 --ppd-prior-ms-per-token 0.017 > $LOGS/D$i.log 2>&1
  done
  log "launched P0 P1 D0 D1"
  TO=220
else
  project_env
  # fixed side ports below the ephemeral range: a random one could take a worker's HTTP port
  EM="$PY -m sglang_ppd.cli emulate --profile configs/profiles/h100-llama31-8b-ppd-fit.yaml --time-scale 1 --host 127.0.0.1"
  for i in 0 1; do
    launch $EM --role prefill --port ${P_PORTS[$i]} --bootstrap-port 899$((8 + i)) --link-bandwidth-gbs 1.474 \
      --kv-events-port 2941$i --kv-replay-port 2942$i --load-port 2943$i --telemetry-port 2944$i > $LOGS/P$i.log 2>&1
  done
  for i in 0 1; do
    launch $EM --role decode --port ${D_PORTS[$i]} --ppd --tbt-budget-ms 30 --telemetry-port 2930$i \
      --kv-events-port 2945$i --kv-replay-port 2946$i --load-port 2947$i > $LOGS/D$i.log 2>&1
  done
  log "launched emulated P0 P1 D0 D1"
  TO=60
fi
N=0
for name in P0 P1 D0 D1; do
  port=$([ ${name:0:1} = P ] && echo ${P_PORTS[${name:1}]} || echo ${D_PORTS[${name:1}]})
  wait_health http://127.0.0.1:$port $TO $name ${PIDS[$N]:-$$} || exit 1
  N=$((N + 1))
done

$PY - <<PYEOF > $RES/extras.json 2>$LOGS/extras.err
import json, platform, time, urllib.request, subprocess
def get(url):
    try:
        return json.loads(urllib.request.urlopen(url, timeout=5).read())
    except Exception as e:
        return {"error": repr(e)}
out = {"backend": "$BACKEND", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "node": platform.node()}
try:
    out["device"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                   capture_output=True, text=True).stdout.strip().splitlines()
except Exception as e:
    out["device"] = "none (%s)" % "$BACKEND"
keys = ("ppd_local_prefill", "ppd_telemetry_endpoint", "version", "disaggregation_mode",
        "disaggregation_decode_enable_radix_cache", "chunked_prefill_size", "max_total_num_tokens",
        "mem_fraction_static", "cuda_graph_max_bs")
for n, u in (("P0", ${P_PORTS[0]}), ("P1", ${P_PORTS[1]}), ("D0", ${D_PORTS[0]}), ("D1", ${D_PORTS[1]})):
    info = get(f"http://127.0.0.1:{u}/server_info")
    out[f"server_info_{n}"] = {k: info.get(k) for k in keys if k in info} or info
caps = [out[f"server_info_D{i}"].get("max_total_num_tokens") for i in (0, 1)]
out["kv_capacity_tokens"] = min(c for c in caps if isinstance(c, int)) if any(isinstance(c, int) for c in caps) else None
print(json.dumps(out, indent=1, default=str))
PYEOF
log "extras: $(head -c 600 $RES/extras.json | tr '\n' ' ')"
pack

LEFT=$(( END_EPOCH - $(date +%s) - 20 ))
log "measuring, $LEFT s left"
$PY benchmarks/gpu/cluster_2p2d.py run --out $RES --deadline-epoch $(( END_EPOCH - 20 )) \
  --duration-s ${DURATION_S:-30} --drain-s ${DRAIN_S:-20} --workers ${BENCH_WORKERS:-2} ${PLAN_ARGS:-} \
  --after-each "cd $RES && tar czf $OUTROOT/results.tar.gz runs.jsonl runs extras.json logs/router_*.log 2>/dev/null"
log "runs done rc=$?"
grep -iE "Traceback|Error" $LOGS/D0.log $LOGS/D1.log 2>/dev/null | grep -v "ErrorCode\|error_code" | head -5
log "ALL DONE"
