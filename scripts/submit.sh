#!/usr/bin/env bash
# Submit a `raydistill search` to a running Ray cluster with `ray job submit`.
#
#   scripts/submit.sh [OPTIONS] [--] SEARCH_ARGS...
#
# OPTIONS come first; SEARCH_ARGS (from the first non-option, or after --) go to
# `raydistill search` unchanged, except that `--address auto` is added when absent: inside a
# Ray job the driver must attach to the cluster it runs on, not start a Ray of its own.
#
# The job API is the dashboard's HTTP port (ray[default] on the cluster). From a laptop, reach it
# through a tunnel that ends on 127.0.0.1:
#   ray dashboard cluster/launcher/aws.yaml                          (cluster launcher, SSH)
#   kubectl port-forward svc/raydistill-head-svc 8265:8265           (KubeRay)
#
# Auth: with RAY_AUTH_MODE unset, token auth is turned on when a token is found (RAY_AUTH_TOKEN,
# RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token); the `ray` CLI reads it from there. The token is
# never printed and never put in the job's runtime env. Variables that look like secrets
# (*KEY*, *TOKEN*, *SECRET*, *PASSWORD*) are refused by --env: give the cluster's nodes their
# own W&B key (a Kubernetes Secret, or `wandb login` in the node setup).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
PYTHON="${PYTHON:-$(command -v python3 || command -v python || true)}"

usage() {
    cat <<'EOF'
usage: scripts/submit.sh [OPTIONS] [--] SEARCH_ARGS...
OPTIONS come first; everything from the first SPACE.yaml (or after --) goes to raydistill search.
options:
  --job-address URL     job API (dashboard); default $RAY_API_SERVER_ADDRESS or http://127.0.0.1:8265
  --working-dir DIR     uploaded with the job (default: the repository root; data, runs, .git excluded)
  --pip REQ             pip requirement for the job's runtime env (repeatable; clusters without raydistill)
  --env NAME=VALUE      extra environment variable for the job (repeatable; no secrets)
  --submission-id ID    job id (default: chosen by Ray)
  --entrypoint-num-cpus N   CPUs reserved for the search driver (default 1)
  --no-wait             return after submitting instead of following the logs
  --print               print the ray command (no secrets) and exit without submitting
example:
  scripts/submit.sh -- search_spaces/cnn.yaml --budgets 1M,3.16M --depths 1,2 --trials 32 \
      --transfer ~/data/transfer.parquet --data ~/data/cifar10-jpeg.parquet \
      --gpus-per-trial 0.25 --storage s3://my-bucket/raydistill/tune --out ~/runs/cnn --name cnn
EOF
}

die() { echo "submit: error: $*" >&2; exit 2; }
note() { echo "submit: $*" >&2; }

looks_secret() { [[ "${1^^}" =~ (KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL) ]]; }

# Decide the auth mode for the `ray` CLI and say where the token comes from (never its value).
setup_auth() {
    local default_path="$HOME/.ray/auth_token"
    if [[ -z "${RAY_AUTH_MODE:-}" ]]; then
        if [[ -n "${RAY_AUTH_TOKEN:-}" || -s "${RAY_AUTH_TOKEN_PATH:-$default_path}" ]]; then
            export RAY_AUTH_MODE=token
        else
            note "auth: no token found (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, $default_path); submitting without one"
            return 0
        fi
    fi
    if [[ "$RAY_AUTH_MODE" == token ]]; then
        if [[ -n "${RAY_AUTH_TOKEN:-}" ]]; then
            note "auth: token from \$RAY_AUTH_TOKEN (value not shown)"
        elif [[ -s "${RAY_AUTH_TOKEN_PATH:-$default_path}" ]]; then
            note "auth: token from ${RAY_AUTH_TOKEN_PATH:-$default_path}"
        else
            die "RAY_AUTH_MODE=token but no token: set RAY_AUTH_TOKEN_PATH or copy the cluster's token to $default_path"
        fi
    else
        note "auth: RAY_AUTH_MODE=$RAY_AUTH_MODE"
    fi
}

# The job API answers any HTTP request (401 without a token counts: it is there).
check_reachable() {
    "$PYTHON" - "$1" <<'PY' || die "no Ray job API at $1: open the tunnel (ray dashboard CLUSTER.yaml, or kubectl port-forward svc/raydistill-head-svc 8265:8265) or start a cluster with ray[default]"
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1].rstrip("/") + "/api/version", timeout=5)
except urllib.error.HTTPError:
    pass
except Exception:
    sys.exit(1)
PY
}

# JSON runtime env: working dir (minus bulky or private files), env vars, optional pip list.
runtime_env_json() {
    "$PYTHON" - "$@" <<'PY'
import json, sys
working_dir, n_env, *rest = sys.argv[1:]
env = dict(kv.split("=", 1) for kv in rest[: int(n_env)])
pip = rest[int(n_env):]
renv = {
    "working_dir": working_dir,
    # Ray also honours .gitignore; these keep data, outputs and local state out even without it.
    "excludes": [".git", ".ray-local", "runs", "wandb", "*.parquet", "*.safetensors", "*.pt",
                 "*.npz", "*.npy", ".venv", "venv", "__pycache__", ".pytest_cache", ".ruff_cache"],
    "env_vars": env,
}
if pip:
    renv["pip"] = pip
print(json.dumps(renv, sort_keys=True))
PY
}

main() {
    local address="${RAY_API_SERVER_ADDRESS:-http://127.0.0.1:8265}" working_dir="$REPO_ROOT"
    local submission_id="" no_wait=0 print_only=0 entry_cpus=1
    local -a pips=() envs=() search=()
    while (($#)); do
        case "$1" in
            --job-address) address="${2:?--job-address needs a URL}"; shift 2 ;;
            --working-dir) working_dir="${2:?--working-dir needs a folder}"; shift 2 ;;
            --pip) pips+=("${2:?--pip needs a requirement}"); shift 2 ;;
            --env) envs+=("${2:?--env needs NAME=VALUE}"); shift 2 ;;
            --submission-id) submission_id="${2:?--submission-id needs a value}"; shift 2 ;;
            --entrypoint-num-cpus) entry_cpus="${2:?--entrypoint-num-cpus needs a number}"; shift 2 ;;
            --no-wait) no_wait=1; shift ;;
            --print) print_only=1; shift ;;
            -h | --help) usage; exit 0 ;;
            --) shift; search+=("$@"); break ;;
            -*) die "unknown option '$1' before the search arguments (put search options after --)" ;;
            *) search+=("$@"); break ;;
        esac
    done
    [[ -n "$PYTHON" ]] || die "no python3 on PATH; set PYTHON=/path/to/venv/bin/python"
    [[ ${#search[@]} -gt 0 ]] || { usage >&2; die "no search arguments (at least one SPACE.yaml)"; }
    [[ "${search[0]}" == search ]] && search=("${search[@]:1}")
    [[ -d "$working_dir" ]] || die "--working-dir '$working_dir' is not a folder"
    working_dir="$(cd "$working_dir" && pwd)"

    local kv
    for kv in "${envs[@]}"; do
        [[ "$kv" == *=* && "${kv%%=*}" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "--env '$kv' is not NAME=VALUE"
        looks_secret "${kv%%=*}" && die "--env ${kv%%=*}: secrets do not go in the job's runtime env (it is stored and shown by the dashboard); give the nodes the secret instead"
    done
    # Non-secret W&B settings follow the user; the key never does.
    local var
    for var in WANDB_PROJECT WANDB_ENTITY WANDB_MODE; do
        [[ -n "${!var:-}" ]] && envs+=("$var=${!var}")
    done
    envs+=("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S=0")

    local has_address=0 storage=""
    local i
    for ((i = 0; i < ${#search[@]}; i++)); do
        case "${search[$i]}" in
            --address | --address=*) has_address=1 ;;
            --storage) storage="${search[$((i + 1))]:-}" ;;
            --storage=*) storage="${search[$i]#--storage=}" ;;
        esac
    done
    ((has_address)) || search+=(--address auto)
    if [[ ! "$storage" =~ ^(s3|gs|gcs|abfs)://|^/ ]]; then
        note "warning: no --storage s3://... or gs://... (or a shared absolute path): on a multi-node cluster trial checkpoints then stay on the node that wrote them"
    fi

    local renv
    renv="$(runtime_env_json "$working_dir" "${#envs[@]}" "${envs[@]}" "${pips[@]}")"
    local -a cmd=(ray job submit --address "$address" --runtime-env-json "$renv"
        --entrypoint-num-cpus "$entry_cpus")
    [[ -n "$submission_id" ]] && cmd+=(--submission-id "$submission_id")
    ((no_wait)) && cmd+=(--no-wait)
    cmd+=(-- raydistill search "${search[@]}")

    if ((print_only)); then
        printf '%q ' "${cmd[@]}"
        echo
        return 0
    fi
    local ray_bin="${RAY:-$(dirname "$PYTHON")/ray}"
    [[ -x "$ray_bin" ]] || ray_bin="$(command -v ray || true)"
    [[ -n "$ray_bin" ]] || die "no 'ray' next to $PYTHON or on PATH; pip install 'raydistill[cluster]'"
    cmd[0]="$ray_bin"
    setup_auth
    check_reachable "$address"
    note "submitting to $address: raydistill search ${search[*]}"
    exec "${cmd[@]}"
}

main "$@"
