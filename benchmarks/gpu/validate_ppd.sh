#!/bin/bash
# One device call: a real SGLang 0.5.17 prefill server + a PPD-capable decode server
# (python -m sglang_ppd.worker) + the sglang_ppd router on one GPU, then ppd_client.py phases a-e.
#
# usage (device, repo root, gpu_bundle/ carried; see benchmarks/gpu.md):
#   bash benchmarks/gpu/validate_ppd.sh [DEADLINE_S] [MODEL: 886m|8b] 2>&1 | tee $OUT/MODEL.log
# Writes $OUT/MODEL/results.json (client) and $OUT/MODEL/bundle.tar.gz (extras.json: server_info,
# telemetry, router stats; iter.jsonl.gz: D's per-iteration log; P, D, router logs), and
# $OUT/triton.tar.gz (the JIT cache, for a faster next start).
set -u
set -m
DEADLINE=${1:-560}
MODEL=${2:-886m}
OUT=${OUT:-/tmp/out}/$MODEL; mkdir -p $OUT
T0=$SECONDS
log() { echo "[$(( SECONDS - T0 ))s] $*"; }
left() { echo $(( DEADLINE - (SECONDS - T0) )); }
REPO=$PWD
LOGS=/tmp/ppdlogs-$MODEL; rm -rf $LOGS; mkdir -p $LOGS

log "== env (model $MODEL)"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader
if [ -f $REPO/gpu_bundle/triton.tar.gz ]; then mkdir -p ~/.triton && tar xzf $REPO/gpu_bundle/triton.tar.gz -C ~/.triton; log "triton cache restored"; fi
if [ ! -f /tmp/site/.ok3 ]; then
  mkdir -p /tmp/site && for t in core pd fi; do tar xJf gpu_bundle/$t.tar.xz -C /tmp/site & done; wait; touch /tmp/site/.ok3
  # the router's own wheels the device image lacks (httptools): see cluster_2p2d.sh
  for w in gpu_bundle/wheels/*.whl; do [ -f "$w" ] && python3 -m zipfile -e "$w" /tmp/site; done
fi
# The project from the carried tree: sources on PYTHONPATH, plus a dist-info so the policy entry
# points (importlib.metadata) resolve without a pip install.
python3 - <<'PY'
import tomllib, pathlib
p = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]
d = pathlib.Path("/tmp/ppdmeta") / f"sglang_ppd-{p['version']}.dist-info"
d.mkdir(parents=True, exist_ok=True)
(d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: sglang-ppd\nVersion: {p['version']}\n")
eps = "".join(f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in e.items()) for g, e in p["entry-points"].items())
(d / "entry_points.txt").write_text(eps)
PY
export PYTHONPATH=/tmp/site:$REPO:$REPO/policies:/tmp/ppdmeta PYTHONUNBUFFERED=1
export SGLANG_IS_FLASHINFER_AVAILABLE=false SGLANG_HOST_IP=127.0.0.1 HOST_IP=127.0.0.1
export MC_FORCE_TCP=1 MOONCAKE_PROTOCOL=tcp
if [ "$MODEL" = 8b ]; then
  python3 benchmarks/gpu/make_model_8b.py /tmp/model > $LOGS/model.log 2>&1 &
else
  python3 gpu_bundle/make_model.py /tmp/model > $LOGS/model.log 2>&1 &
fi
MODEL_PID=$!
python3 - <<'PY' 2>&1 | tail -4
import sglang_ppd.worker.sglang_ext as e
print("sglang", e.check_sglang())
e.install()
print("preflight: scheduler patches installed:", sorted(e._ORIG))
from sglang_ppd.core.policy import load_policy  # noqa: F401
from importlib.metadata import entry_points
print("policies:", sorted(x.name for x in entry_points(group="sglang_ppd.policies")))
PY
wait $MODEL_PID; tail -1 $LOGS/model.log
log "setup done"

# --mem-fraction-static is a share of the memory free when a server starts: equal fractions fit the
# 886M pair, but the 8B decode server starts beside a prefill server already holding ~26 GB.
if [ "$MODEL" = 8b ]; then P_MEM=0.30 D_MEM=0.50 SLO=${PPD_TBT_SLO_MS:-30} PRIOR="--ppd-prior-mixed-overhead-ms 4 --ppd-prior-ms-per-token 0.017" DLEN=256
else P_MEM=0.35 D_MEM=0.35 SLO=${PPD_TBT_SLO_MS:-25} PRIOR="" DLEN=512; fi
BASE="--model-path /tmp/model --skip-tokenizer-init --host 127.0.0.1 --attention-backend triton --sampling-backend pytorch --grammar-backend none --disaggregation-transfer-backend mooncake"
health() { python3 -c "import sys,urllib.request; urllib.request.urlopen(sys.argv[1] + '/health', timeout=2)" "$1" 2>/dev/null; }
wait_health() { local url=$1 to=$2 name=$3 pid=$4 t=$SECONDS
  while (( SECONDS - t < to )); do
    health $url && { log "$name healthy after $((SECONDS-t)) s"; return 0; }
    kill -0 $pid 2>/dev/null || { log "$name DIED"; grep -v "^\s*$" $LOGS/$name.log | tail -40; return 1; }
    sleep 2
  done
  log "$name TIMEOUT after $to s"; tail -30 $LOGS/$name.log; return 1; }
PIDS=()
stop_all() { for p in "${PIDS[@]}"; do kill -- -$p 2>/dev/null; done; sleep 3; for p in "${PIDS[@]}"; do kill -9 -- -$p 2>/dev/null; done; }
collect() {  # $OUT keeps results.json + bundle.tar.gz (logs, iteration log, extras): few files per run
  [ -f $LOGS/iter.jsonl ] && gzip -c $LOGS/iter.jsonl > $LOGS/iter.jsonl.gz && rm $LOGS/iter.jsonl
  mv $OUT/extras.json $LOGS/ 2>/dev/null
  ( cd $LOGS && tar czf $OUT/bundle.tar.gz * 2>/dev/null )
  if [ -d ~/.triton/cache ]; then
    ( cd ~/.triton && tar czf /tmp/triton.tar.gz cache ) && [ $(stat -c %s /tmp/triton.tar.gz) -lt 15000000 ] && cp /tmp/triton.tar.gz $(dirname $OUT)/triton.tar.gz
  fi
  ls -la $OUT
}
trap 'stop_all; collect' EXIT

python3 -m sglang.launch_server $BASE --mem-fraction-static $P_MEM --port 30100 --disaggregation-mode prefill --disaggregation-bootstrap-port 8998 \
  --disable-cuda-graph --kv-events-config '{"publisher":"zmq","endpoint":"tcp://*:5558"}' > $LOGS/P.log 2>&1 &
PIDS+=($!); log "launched P"
wait_health http://127.0.0.1:30100 240 P ${PIDS[0]} || exit 1
launch_d() {  # $1: log name; the environment carries anything extra (SGLANG_TEST_RETRACT)
  python3 -m sglang_ppd.worker $BASE --mem-fraction-static $D_MEM --port 30200 --disaggregation-mode decode \
    --kv-events-config '{"publisher":"zmq","endpoint":"tcp://*:5557"}' --cuda-graph-max-bs 48 \
    --ppd-tbt-slo-ms $SLO --ppd-min-chunk-len 128 --ppd-max-chunk-len 4096 $PRIOR \
    --ppd-iter-log $LOGS/iter.jsonl > $LOGS/$1.log 2>&1 &
  PIDS+=($!); log "launched $1 (sglang_ppd.worker)"; }
launch_d D
D_TO=$(( $(left) - 90 )); (( D_TO > 180 )) && D_TO=180
wait_health http://127.0.0.1:30200 $D_TO D ${PIDS[1]} || exit 1
python3 -m sglang_ppd.cli router --prefill http://127.0.0.1:30100 8998 --decode http://127.0.0.1:30200 \
  --port 30000 --policy always_local > $LOGS/router.log 2>&1 &
PIDS+=($!); log "launched router"
wait_health http://127.0.0.1:30000 40 router ${PIDS[2]} || { tail -30 $LOGS/router.log; }
sleep 2

python3 - <<'PY' > $OUT/extras.json 2>$LOGS/extras.err
import json, urllib.request, zmq, time
from sglang_ppd.protocol import telemetry
def get(url):
    try:
        return json.loads(urllib.request.urlopen(url, timeout=5).read())
    except Exception as e:
        return {"error": repr(e)}
info = get("http://127.0.0.1:30200/server_info")
out = {"server_info_D": {k: info.get(k) for k in ("ppd_local_prefill", "ppd_telemetry_endpoint", "kv_events", "version",
        "disaggregation_mode", "disaggregation_decode_enable_radix_cache", "chunked_prefill_size", "max_total_num_tokens")}}
ctx = zmq.Context(); s = ctx.socket(zmq.SUB); s.setsockopt(zmq.SUBSCRIBE, telemetry.TOPIC); s.setsockopt(zmq.RCVTIMEO, 3000)
s.connect("tcp://127.0.0.1:30300")
try:
    t = telemetry.decode(s.recv_multipart()[1])
    out["telemetry_sample"] = {f: getattr(t, f) for f in t.__struct_fields__}
except Exception as e:
    out["telemetry_sample"] = {"error": repr(e)}
out["router_workers"] = get("http://127.0.0.1:30000/workers")
print(json.dumps(out, indent=1, default=str))
PY
log "server_info/telemetry: $(python3 -c "import json;d=json.load(open('$OUT/extras.json'));print(d['server_info_D'].get('ppd_local_prefill'), d['server_info_D'].get('ppd_telemetry_endpoint'), str(d['telemetry_sample'])[:300])")"

timeout $(( $(left) - 25 )) python3 benchmarks/gpu/ppd_client.py --router http://127.0.0.1:30000 --decode http://127.0.0.1:30200 \
  --p-log $LOGS/P.log --out $OUT/results.json --phases ${PPD_PHASES:-abcde} --decode-len $DLEN
log "client rc=$?"
if [ "${PPD_ROBUST:-0}" = 1 ]; then  # correctness checks: benchmarks/gpu/ppd_robust.py
  RB="--router http://127.0.0.1:30000 --decode http://127.0.0.1:30200 --telemetry tcp://127.0.0.1:30300 --out $OUT/robust.json"
  timeout 150 python3 benchmarks/gpu/ppd_robust.py $RB --phase equal_abort
  kill -- -${PIDS[1]} 2>/dev/null; sleep 4; kill -9 -- -${PIDS[1]} 2>/dev/null; sleep 2
  SGLANG_TEST_RETRACT=1 SGLANG_TEST_RETRACT_INTERVAL=5 launch_d D2
  wait_health http://127.0.0.1:30200 150 D2 ${PIDS[-1]} && sleep 8 && timeout 150 python3 benchmarks/gpu/ppd_robust.py $RB --phase retract
  grep -c "Testing retraction" $LOGS/D2.log | xargs echo "D2 forced retractions logged:"
fi
python3 - <<'PY' >> $OUT/extras.json.tmp 2>/dev/null
import json, urllib.request
print(json.dumps(json.loads(urllib.request.urlopen("http://127.0.0.1:30000/stats", timeout=5).read())))
PY
python3 - <<PY
import json
d = json.load(open("$OUT/extras.json"))
try:
    d["router_stats"] = json.loads(open("$OUT/extras.json.tmp").read())
except Exception as e:
    d["router_stats"] = {"error": repr(e)}
json.dump(d, open("$OUT/extras.json", "w"), indent=1, default=str)
PY
rm -f $OUT/extras.json.tmp
grep -c '"kind": "mixed"' $LOGS/iter.jsonl 2>/dev/null | xargs echo "mixed iterations logged:"
grep -iE "Traceback|Error" $LOGS/D.log | grep -v "ErrorCode\|error_code" | head -5
log "ALL DONE"
