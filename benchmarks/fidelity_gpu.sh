#!/bin/bash
# Issue 17 on a lent GPU machine: real vLLM 0.26 under KV pressure next to the simulator configured the same way.
#
# Here (CPU machine), from the project root, once (~3 min; writes the ignored .gpu/):
#     bash benchmarks/fidelity_gpu.sh prepare
# Then three device calls back to back (the machine stays warm between them; ../shared/gpu/README.md):
#     run(carry=[".gpu/c1"], command="mkdir -p /tmp/b && cp .gpu/c1/part.0 /tmp/b/")
#     run(carry=[".gpu/c2", ".gpu/fid"], command="cp .gpu/c2/part.1 /tmp/b/ && cp -r .gpu/fid /tmp/fid")
#     run(carry=[".gpu/c3", ".gpu/model"], command="bash benchmarks/fidelity_gpu.sh device", timeout_s=600)
# The last call installs vLLM (~1 min), starts one replica with --num-gpu-blocks-override $BLOCKS (2,195: the
# issue's small replica; ~4-5 min with torch.compile and CUDA graphs, as calibrated), then runs
# benchmarks/fidelity.py twice (pressure: shared prefix 48 x 4,096 + 256 tokens, Poisson $RATE req/s, $N requests;
# calibration: cold/warm single requests) against it and against the simulator with the same blocks; tables and
# JSON land in $OUT. A second call with the server still warm skips the install and start (rerun with other RATE/N).
# TWO=1 instead starts the two replicas on this one GPU (0.42 of its memory each, 2,195 and 6,741 blocks)
# and adds the simulator with and without a shared accelerator (--sim-shared); that start takes twice as long.
set -u
MODE=${1:-device}
RATE=${RATE:-6}; N=${N:-300}; BLOCKS=${BLOCKS:-2195}; BLOCKS2=${BLOCKS2:-6741}; TWO=${TWO:-0}

if [ "$MODE" = prepare ]; then
  set -e
  [ -f .gpu/c3/part.2 ] || bash ../shared/gpu/make_bundle.sh
  # what the project imports that the device's Python 3.12 (torch + vLLM's deps) lacks; pure-Python wheels
  mkdir -p .gpu/fid
  pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .gpu/fid \
    rich markdown-it-py mdurl pygments plotly narwhals
  du -sh .gpu/*
  exit 0
fi

OUT=${OUT:-/tmp/fidelity-out}; mkdir -p "$OUT"
export PYTHONPATH=/tmp/site
if ! python3 -c "import vllm" 2>/dev/null; then
  NO_SERVE=1 bash .gpu/c3/start_vllm.sh 2>&1 | tail -5
fi
if [ -d /tmp/fid ] && [ ! -d /tmp/fsite ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/fsite /tmp/fid/*.whl 2>&1 | tail -2
fi
export PYTHONPATH=$PWD:/tmp/site:/tmp/fsite
NVML=$(find / -name 'libnvidia-ml.so.1' -not -path '*/proc/*' 2>/dev/null | head -3)
for d in $(for f in $NVML; do dirname "$f"; done | sort -u); do export LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}; done

start() {  # port blocks gpu_util: one vLLM replica in its own session (survives this call while the machine is warm)
  curl -sf "localhost:$1/health" >/dev/null && { echo "replica on :$1 already up"; return; }
  VLLM_SERVER_DEV_MODE=1 setsid nohup python3 -m vllm.entrypoints.openai.api_server --model /tmp/model \
    --served-model-name llama-8b-shape --load-format dummy --dtype bfloat16 --max-model-len 16384 \
    --gpu-memory-utilization "$3" --num-gpu-blocks-override "$2" --port "$1" --enable-prefix-caching \
    --enable-prompt-tokens-details \
    > "/tmp/vllm-$1.log" 2>&1 < /dev/null &
  echo "starting replica :$1 ($2 blocks, pid $!)"
}
wait_up() {  # port
  for _ in $(seq 1 130); do
    curl -sf "localhost:$1/health" >/dev/null && { echo "replica :$1 healthy"; return 0; }
    sleep 3
  done
  echo "replica :$1 not healthy"; tail -30 "/tmp/vllm-$1.log"; cp "/tmp/vllm-$1.log" "$OUT/"; return 1
}

if [ -d .gpu/model ] && [ ! -f /tmp/model/config.json ]; then mkdir -p /tmp/model && cp .gpu/model/* /tmp/model/; fi
if [ "$TWO" = 1 ]; then
  start 8000 "$BLOCKS" 0.42; wait_up 8000 || exit 1   # one after the other: both profile the GPU's memory
  start 8001 "$BLOCKS2" 0.42; wait_up 8001 || exit 1
  HTTP="vllm=http://127.0.0.1:8000,http://127.0.0.1:8001"
  SIMS=(--sim "sim=$BLOCKS,$BLOCKS2" --sim-shared "sim-one-gpu=$BLOCKS,$BLOCKS2")
  ROUTING=(--routing round-robin affinity)
else
  start 8000 "$BLOCKS" 0.85; wait_up 8000 || exit 1
  HTTP="vllm=http://127.0.0.1:8000"
  SIMS=(--sim "sim=$BLOCKS")
  ROUTING=(--routing round-robin)
fi
curl -s localhost:8000/metrics | grep -E '^vllm:cache_config_info' | grep -o 'num_gpu_blocks="[0-9]*"'

python3 benchmarks/fidelity.py --workload pressure --http "$HTTP" "${SIMS[@]}" "${ROUTING[@]}" \
  --rate "$RATE" --num-requests "$N" --out "$OUT/pressure.md" --json "$OUT/pressure.json"
python3 benchmarks/fidelity.py --workload calibration --http "$HTTP" "${SIMS[@]}" --routing round-robin \
  --out "$OUT/calibration.md" --json "$OUT/calibration.json"
for p in 8000 8001; do [ -f "/tmp/vllm-$p.log" ] && tail -200 "/tmp/vllm-$p.log" > "$OUT/vllm-$p.log"; done
echo "results in $OUT"
