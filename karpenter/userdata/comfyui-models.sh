#!/usr/bin/env bash
# comfyui-models: what a GPU node does before kubelet starts (AL2023, nodeadm).
#
# Installed by the GPU user data (gpuUserData.ts) at /usr/local/bin/comfyui-models and run once per
# boot as `comfyui-models boot`, which
#   1. builds the RAID0 array over the NVMe instance store (setup-local-disks raid0) and the models
#      folder on it, with the model agent's private folder (mode 0700);
#   2. copies the pinned models (PINS; none by default) that fit, within BOOT_FILL_SECONDS, while
#   3. the ComfyUI image is pulled by digest (IMAGE_PARAM), so kubelet finds it present;
#   4. labels the node (boot-at, models-missing), writes the boot summary and sends its metrics.
# Everything after registration is the model agent's (workload/models/agent, a DaemonSet): fetch
# on demand, LRU eviction, pins, and the bucket changes the sync Lambda sends over SSM. The agent
# adopts what this boot put on disk and fetches any pinned file that is still missing.
#
#   comfyui-models boot        the above
#   comfyui-models fill-pins   step 2 alone (what the boot runs; an operator can run it too)
#
# Exit codes: 0 ok (fill-pins: every pinned file that fits is present; what does not fit, or what
# is left to the agent, is reported, not an error); 1 a transfer failed; 2 usage or configuration
# error; 3 bucket not reachable; 75 BOOT_FILL_SECONDS reached (the agent fetches the rest).
# `boot` never fails because of models: the node registers and the agent fetches what is missing.
# It keeps kubelet down (Karpenter then replaces the node) only when the instance store is missing.
#
# Pins: entries separated by commas or newlines (PINS_B64, base64, keeps the user data ASCII): a
# file key (`checkpoints/x.safetensors`) or a folder ending in `/` (`loras/`), as the agent's --pin
# takes them (workload/models/contract.ts checkPinEntry). Entries are taken in order and, within a
# folder, in bucket key order; a file that does not fit is skipped and reported, later smaller ones
# still may fit. Only keys whose every character is ASCII from the allow-list of sync/keys.ts
# checkKey are copied here; any other key is left to the agent, which applies that rule in full.
#
# Disk: a copy never takes the array's free space below RESERVE_GB plus EVICTION_PERCENT of the
# array (kubelet's evictionHard nodefs.available, 10% as nodeadm sets it, amazon-eks-ami v20260724
# nodeadm/internal/kubelet/config.go): the same floor the agent keeps (--reserve-gb,
# --reserve-percent), computed once by the stack (karpenter/nodeContract.ts modelsReserveGb).
#
# Complete files only: each file is downloaded into the agent's staging folder on the same array
# and renamed into its model folder after its size checked out; the agent empties staging when it
# starts, so a boot cut short leaves nothing half-written anywhere ComfyUI looks.
#
# Boot summary: $SUMMARY_DIR/boot-summary.json, the same JSON on one journal line (tag comfyui-boot)
# and a human line on the console. Stable fields: schema (1), instance_type, t_boot (kernel start,
# epoch s), t_userdata, t_raid, t_filled, t_image (epoch s, null when not reached), fill {result:
# none|complete|partial|budget|failed, files, bytes, seconds, mb_per_s, missing_files,
# missing_bytes, missing [keys]}, image {ref, result: present|failed|skipped, seconds, snapshotter}.
# It is sent as one CloudWatch EMF event (the jq program BOOT_EMF_JQ, generated from
# observability/metrics.ts) to log group METRICS_LOG_GROUP, stream node-boot/<instance id>; best
# effort, a failure is one line. The label comfyui.studio/boot-at=<t_boot> lets the gateway time
# kernel start -> registered -> ComfyUI ready.
#
# Settings come from the environment, else from /etc/comfyui-models.env (COMFYUI_MODELS_ENV_FILE
# overrides the path); the environment wins. BOOT_ROOT prefixes the node's fixed paths (/etc,
# /var/log, /dev/console): empty on a node, a sandbox in the tests. Every step of the image
# pre-pull is bounded (the SSM read 60 s; containerd start and ECR login PREPULL_STEP_SECONDS each,
# default 60; all by the fill's deadline), so nothing here can hold kubelet's registration, which
# Karpenter gives 15 minutes.
set -euo pipefail
# Files land on a hostPath that ComfyUI (not root) reads.
umask 022

readonly PROG=comfyui-models
readonly EX_FAILED=1 EX_USAGE=2 EX_BUCKET=3 EX_BUDGET=75

# Same values as karpenter/nodeContract.ts and workload/models/contract.ts; a test pins them.
readonly DEFAULT_MODELS_DIR=/mnt/k8s-disks/0/comfyui-models
readonly AGENT_PRIVATE_DIR=.comfyui-agent
readonly DEFAULT_MODEL_FOLDERS="audio_encoders checkpoints clip clip_vision configs controlnet diffusers diffusion_models embeddings gligen hypernetworks latent_upscale_models loras model_patches photomaker style_models text_encoders unet upscale_models vae vae_approx"

readonly SETTINGS=(MODELS_BUCKET AWS_REGION AWS_ENDPOINT_URL MODELS_DIR MODEL_FOLDERS PINS PINS_B64 PARALLEL
  BOOT_FILL_SECONDS RESERVE_GB EVICTION_PERCENT INSTANCE_TYPE TRANSFER_CLIENT SUMMARY_DIR IMAGE_PARAM
  PREPULL_STEP_SECONDS CONTAINERD_CONFIG DISK USERDATA_START BOOT_ROOT METRICS_LOG_GROUP CLUSTER_NAME BOOT_EMF_JQ
  INSTANCE_ID AWS_ENDPOINT_URL_CLOUDWATCH_LOGS)
readonly G=1000000000

log() { printf '%s: %s %s\n' "$PROG" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() {
  local code=$1
  shift
  log "error: $*"
  exit "$code"
}
# What an operator must see: stderr, the console and the journal.
say() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  printf '%s: %s\n' "$PROG" "$*" >>"$BOOT_ROOT/dev/console" 2>/dev/null || true
  logger -t "$PROG" -- "$*" 2>/dev/null || true
}

# The CLI's error text, on one line for the journal.
oneline() { tr -s '\n\t ' ' ' <"$1" | sed 's/^ //; s/ $//'; }

# Decimal units, as instance store and S3 sizes are quoted.
human() {
  local b=$1
  if ((b < 0)); then b=0; fi
  if ((b >= G)); then printf '%d.%02d GB' $((b / G)) $(((b % G) / 10000000))
  elif ((b >= 1000000)); then printf '%d.%02d MB' $((b / 1000000)) $(((b % 1000000) / 10000))
  else printf '%d bytes' "$b"; fi
}

SETTINGS_FILE=
load_settings() {
  local file=${COMFYUI_MODELS_ENV_FILE-/etc/comfyui-models.env} name
  SETTINGS_FILE=${file:-none}
  if [[ -n $file && -e $file ]]; then
    [[ -r $file ]] || die "$EX_USAGE" "settings file $file is not readable"
    local -A keep=()
    for name in "${SETTINGS[@]}"; do
      if [[ -v $name ]]; then keep[$name]=${!name}; fi
    done
    set -a
    # shellcheck source=/dev/null
    . "$file"
    set +a
    for name in "${!keep[@]}"; do printf -v "$name" '%s' "${keep[$name]}"; done
  fi
  : "${BOOT_ROOT:=}" "${MODELS_BUCKET:=}" "${AWS_REGION:=}" "${PINS:=}" "${PINS_B64:=}"
  : "${MODELS_DIR:=$DEFAULT_MODELS_DIR}" "${MODEL_FOLDERS:=$DEFAULT_MODEL_FOLDERS}" "${PARALLEL:=8}"
  : "${BOOT_FILL_SECONDS:=600}" "${RESERVE_GB:=60}" "${EVICTION_PERCENT:=10}" "${INSTANCE_TYPE:=}"
  : "${TRANSFER_CLIENT:=crt}" "${SUMMARY_DIR:=$BOOT_ROOT/var/log/comfyui-models}" "${IMAGE_PARAM:=}" "${PREPULL_STEP_SECONDS:=60}"
  : "${CONTAINERD_CONFIG:=$BOOT_ROOT/etc/containerd/config.toml}" "${DISK:=/mnt/k8s-disks/0}" "${USERDATA_START:=}"
  : "${METRICS_LOG_GROUP:=}" "${CLUSTER_NAME:=}" "${BOOT_EMF_JQ:=}" "${INSTANCE_ID:=}"
  if [[ -z $PINS && -n $PINS_B64 ]]; then
    PINS=$(printf '%s' "$PINS_B64" | base64 -d) || die "$EX_USAGE" "PINS_B64 is not base64"
  fi
  for name in PARALLEL BOOT_FILL_SECONDS RESERVE_GB EVICTION_PERCENT PREPULL_STEP_SECONDS; do
    [[ ${!name} =~ ^[0-9]+$ ]] || die "$EX_USAGE" "$name must be a non-negative integer, got '${!name}'"
  done
  [[ $TRANSFER_CLIENT == crt || $TRANSFER_CLIENT == classic ]] || die "$EX_USAGE" "TRANSFER_CLIENT must be crt or classic"
  ((EVICTION_PERCENT < 100)) || die "$EX_USAGE" "EVICTION_PERCENT must be below 100"
  ((PARALLEL >= 1)) || die "$EX_USAGE" "PARALLEL must be at least 1"
  ((PREPULL_STEP_SECONDS >= 1)) || die "$EX_USAGE" "PREPULL_STEP_SECONDS must be at least 1"
  # An empty AWS_ENDPOINT_URL must not reach CLIs that read it: unset means the real endpoint.
  if [[ -z ${AWS_ENDPOINT_URL:-} ]]; then unset AWS_ENDPOINT_URL; fi
  if [[ -z ${AWS_ENDPOINT_URL_CLOUDWATCH_LOGS:-} ]]; then unset AWS_ENDPOINT_URL_CLOUDWATCH_LOGS; fi
  # Children (xargs workers) get the resolved values and skip the file.
  export "${SETTINGS[@]}"
  export COMFYUI_MODELS_ENV_FILE=
}

# Explicit flags rather than relying on AWS_ENDPOINT_URL: CLI releases before 2.13 ignore it. The
# service-specific variable for CloudWatch Logs (AWS_ENDPOINT_URL_<serviceId>, serviceId "CloudWatch
# Logs" in botocore's logs/2014-03-28/service-2.json) is honoured the same way, so a test can put S3
# and Logs apart. The CRT transfer client (C, multi-connection; preferred_transfer_client exists
# from CLI 2.9, awscli/topics/s3-config.rst) through a config file of the tool's own.
aws_cli() {
  local -a global=(--region "$AWS_REGION")
  local endpoint=${AWS_ENDPOINT_URL:-}
  if [[ ${1:-} == logs && -n ${AWS_ENDPOINT_URL_CLOUDWATCH_LOGS:-} ]]; then endpoint=$AWS_ENDPOINT_URL_CLOUDWATCH_LOGS; fi
  if [[ -n $endpoint ]]; then global+=(--endpoint-url "$endpoint"); fi
  # Written once by prepare_dirs, never by the parallel workers (a half-written file would be read).
  if [[ $TRANSFER_CLIENT == crt && -n ${RUN_DIR:-} && -s $RUN_DIR/aws-config ]]; then
    AWS_CONFIG_FILE=$RUN_DIR/aws-config aws "${global[@]}" "$@"
  else
    aws "${global[@]}" "$@"
  fi
}

# Seconds left before the deadline $1 (0 = none: prints nothing), at least 1.
left_until() {
  local left
  ((${1:-0} > 0)) || return 0
  left=$(($1 - $(date +%s)))
  if ((left < 1)); then left=1; fi
  printf '%s' "$left"
}

# A key this boot may write under MODELS_DIR: a strict subset of sync/keys.ts checkKey (ASCII only,
# same punctuation, no shell characters, no empty, '.' or '..' segment, at most 1024 bytes and 255
# per segment, under a model folder). Anything else is the agent's to judge and fetch.
boot_key_ok() {
  local key=$1 seg LC_ALL=C re="^[]A-Za-z0-9._+()=,@' /[-]+$"
  [[ $key =~ $re && $key != /* && $key != */ && $key == */* ]] || return 1
  ((${#key} <= 1024)) || return 1
  local -a segs
  IFS=/ read -r -a segs <<<"$key"
  for seg in "${segs[@]}"; do
    [[ -n $seg && $seg != . && $seg != .. ]] && ((${#seg} <= 255)) || return 1
  done
  [[ " $MODEL_FOLDERS " == *" ${segs[0]} "* ]]
}

RUN_DIR=
prepare_dirs() {
  local folder
  mkdir -p -- "$MODELS_DIR"
  for folder in $MODEL_FOLDERS; do mkdir -p -- "$MODELS_DIR/$folder"; done
  # The agent's folder (index, staging, socket): root only, so ComfyUI cannot even list it.
  mkdir -p -- "$MODELS_DIR/$AGENT_PRIVATE_DIR/staging"
  chmod 0700 -- "$MODELS_DIR/$AGENT_PRIVATE_DIR" "$MODELS_DIR/$AGENT_PRIVATE_DIR/staging"
  RUN_DIR=$MODELS_DIR/$AGENT_PRIVATE_DIR/staging/boot.$$
  mkdir -p -- "$RUN_DIR"
  trap 'rm -rf -- "$RUN_DIR"' EXIT
  printf '[default]\ns3 =\n  preferred_transfer_client = crt\n' >"$RUN_DIR/aws-config"
}

# ---- the pinned files -----------------------------------------------------------------------

# Runs an executable under what is left of `deadline` (none when 0). timeout puts itself and the
# command in a process group of their own and signals all of it, so no CLI outlives the budget.
deadline=0
bounded() {
  if ((deadline > 0)); then timeout -k 3 "$(left_until "$deadline")" "$@"; else "$@"; fi
}

# One download (an xargs worker): "size<TAB>key". Writes "ok|failed<TAB>size<TAB>why<TAB>key" to
# its own results file. The rename is the moment the file becomes visible: complete or not at all.
get_one() {
  local size=${1%%$'\t'*} key=${1#*$'\t'} part err attempt
  part=$(mktemp -p "$RUN_DIR" part.XXXXXXXX)
  err=$part.err
  for attempt in 1 2; do
    if aws_cli s3 cp --only-show-errors --no-progress "s3://$MODELS_BUCKET/$key" "$part" 2>"$err"; then
      if [[ $(stat -c %s -- "$part") == "$size" ]]; then
        chmod 0644 -- "$part"
        mkdir -p -- "$(dirname -- "$MODELS_DIR/$key")"
        if mv -fT -- "$part" "$MODELS_DIR/$key"; then
          printf 'ok\t%s\t-\t%s\n' "$size" "$key" >"$part.result"
          log "fetched $key ($(human "$size"))"
          return 0
        fi
        printf 'could not move into %s\n' "$MODELS_DIR" >"$err"
      else
        printf 'size %s != listed %s (replaced during the copy?)\n' "$(stat -c %s -- "$part")" "$size" >"$err"
      fi
    fi
    log "copy of $key failed (attempt $attempt of 2): $(oneline "$err")"
  done
  printf 'failed\t%s\t%s\t%s\n' "$size" "$(oneline "$err")" "$key" >"$part.result"
  rm -f -- "$part"
}

# fill-pins: lists each pinned entry, plans what fits above the floor, copies in parallel until the
# deadline (BOOT_FILL_SECONDS from now; 0 = none). Writes "files bytes seconds left failed
# missing_files missing_bytes" to $FILL_STATS and the keys not present ("bytes<TAB>key<TAB>why") to
# $FILL_MISSING when they are set, for the boot summary.
cmd_fill_pins() {
  local start entry size key rc=0 cut='' f
  start=$(date +%s)
  deadline=0
  [[ -n $MODELS_BUCKET ]] || die "$EX_USAGE" "MODELS_BUCKET is not set (environment or settings file $SETTINGS_FILE)"
  [[ -n $AWS_REGION ]] || die "$EX_USAGE" "AWS_REGION is not set"
  prepare_dirs
  local missing=${FILL_MISSING:-$RUN_DIR/missing} plan=$RUN_DIR/plan listing=$RUN_DIR/listing
  : >"$missing"
  : >"$plan"
  if ((BOOT_FILL_SECONDS > 0)); then deadline=$((start + BOOT_FILL_SECONDS)); fi
  local array avail floor usable need=0 need_bytes=0 present=0
  array=$(df -B1 --output=size -- "$MODELS_DIR" | tail -n 1 | tr -d ' ')
  avail=$(df -B1 --output=avail -- "$MODELS_DIR" | tail -n 1 | tr -d ' ')
  [[ $array =~ ^[0-9]+$ && $avail =~ ^[0-9]+$ ]] || die "$EX_USAGE" "cannot read the size of $MODELS_DIR"
  floor=$((RESERVE_GB * G + (array * EVICTION_PERCENT + 99) / 100))
  usable=$((avail - floor))
  log "pins: $(human "$usable") usable of $(human "$array") (floor: ${RESERVE_GB} GB reserve + ${EVICTION_PERCENT}% eviction line)"
  local -A planned=()
  while IFS= read -r entry; do
    entry=${entry#"${entry%%[![:space:]]*}"}
    entry=${entry%"${entry##*[![:space:]]}"}
    [[ -n $entry ]] || continue
    rc=0
    # The CLI follows continuation tokens itself; Key goes last so spaces stay in it.
    bounded bash "$SELF" __aws s3api list-objects-v2 --bucket "$MODELS_BUCKET" \
      --prefix "$entry" --query 'Contents[].[Size,Key]' --output text >"$listing" 2>"$listing.err" || rc=$?
    if ((rc == 124 || rc == 137)); then die "$EX_BUCKET" "listing bucket $MODELS_BUCKET did not finish within the time budget"; fi
    ((rc == 0)) || die "$EX_BUCKET" "bucket $MODELS_BUCKET not reachable: $(oneline "$listing.err")"
    local matched=0
    while IFS=$'\t' read -r size key; do
      # "None" is how the CLI prints a listing without Contents.
      [[ $size =~ ^[0-9]+$ ]] || continue
      # A file entry names one key, not every key it prefixes.
      [[ $entry == */ || $key == "$entry" ]] || continue
      [[ $key != */ && -z ${planned[$key]:-} ]] || continue
      matched=1
      planned[$key]=1
      if ! boot_key_ok "$key"; then
        printf '%s\t%s\t%s\n' "$size" "$key" "left to the model agent (characters outside the boot allow-list)" >>"$missing"
      elif [[ -f $MODELS_DIR/$key && $(stat -c %s -- "$MODELS_DIR/$key") == "$size" ]]; then
        present=$((present + 1))
      elif ((need_bytes + size > usable)); then
        printf '%s\t%s\t%s\n' "$size" "$key" "does not fit: $(human "$size"), $(human $((usable - need_bytes))) left above the floor" >>"$missing"
      else
        need=$((need + 1)) need_bytes=$((need_bytes + size))
        printf '%s\t%s\0' "$size" "$key" >>"$plan"
      fi
    done <"$listing"
    ((matched)) || log "warning: pinned entry '$entry' matches no model in bucket $MODELS_BUCKET"
  done < <(printf '%s\n' "${PINS//,/$'\n'}")

  if ((need > 0)); then
    log "pins: copying $need file(s), $(human "$need_bytes"), $PARALLEL at a time ($present present)"
    # At the deadline every worker and its CLI is stopped (timeout signals its whole process group);
    # their partial files are in RUN_DIR only, removed on exit.
    export _CM_RUN_DIR=$RUN_DIR
    bounded xargs -0 -r -n 1 -P "$PARALLEL" -- bash "$SELF" __get <"$plan" || cut=$?
    if [[ $cut == 124 || $cut == 137 ]]; then log "time budget reached: stopped the copies in flight"; else cut=; fi
  fi
  local ok=0 ok_bytes=0 failed=0 left=0 st why
  local -A done_keys=()
  for f in "$RUN_DIR"/*.result; do
    [[ -e $f ]] || continue
    IFS=$'\t' read -r st size why key <"$f"
    done_keys[$key]=1
    if [[ $st == ok ]]; then ok=$((ok + 1)) ok_bytes=$((ok_bytes + size)); else
      failed=$((failed + 1))
      printf '%s\t%s\t%s\n' "$size" "$key" "$why" >>"$missing"
    fi
  done
  while IFS=$'\t' read -r -d '' size key; do
    [[ -z ${done_keys[$key]:-} ]] || continue
    left=$((left + 1))
    printf '%s\t%s\t%s\n' "$size" "$key" "${cut:+time budget reached}${cut:-copy ended without a result}" >>"$missing"
  done <"$plan"
  local took=$(($(date +%s) - start)) mfiles mbytes
  mfiles=$(wc -l <"$missing")
  mbytes=$(awk -F '\t' '{ s += $1 } END { printf "%d", s }' "$missing")
  if [[ -n ${FILL_STATS:-} ]]; then printf '%s %s %s %s %s %s %s\n' "$ok" "$ok_bytes" "$took" "$left" "$failed" "$mfiles" "$mbytes" >"$FILL_STATS"; fi
  log "pins: copied $ok file(s) ($(human "$ok_bytes")) in ${took}s; $present present; $failed failed; $left left"
  if ((mfiles > 0)); then
    log "not on the node at registration: $mfiles pinned file(s), $(human "$mbytes") (the model agent fetches them):"
    while IFS=$'\t' read -r size key why; do log "  missing: $key ($(human "$size")): $why"; done <"$missing"
  fi
  if ((failed > 0)); then exit "$EX_FAILED"; fi
  if [[ -n $cut ]] || ((left > 0)); then exit "$EX_BUDGET"; fi
}

# ---- boot -----------------------------------------------------------------------------------

# Only an instance without its NVMe array cannot serve: keep kubelet down and let Karpenter replace
# the node. kubelet.service lives in /etc/systemd/system on AL2023, where `systemctl mask` cannot
# replace it, so a drop-in condition does the blocking and mask is the fallback for other AMIs.
block_node() {
  trap - ERR
  local marker=$BOOT_ROOT/etc/comfyui-models.boot-failed drop=$BOOT_ROOT/etc/systemd/system/kubelet.service.d
  say "FATAL: $*"
  say "keeping kubelet from starting: this node will not register and Karpenter removes it"
  printf '%s\n' "$*" >"$marker" || true
  mkdir -p "$drop" || true
  printf '[Unit]\nConditionPathExists=!%s\n' "$marker" >"$drop/99-comfyui-models-block.conf" || true
  systemctl daemon-reload || true
  systemctl mask --now kubelet.service >/dev/null 2>&1 || systemctl stop kubelet.service >/dev/null 2>&1 || true
  exit 1
}

# Seconds one pre-pull step may take: PREPULL_STEP_SECONDS, or less when the deadline $1 is nearer.
bounded_step() {
  local left
  left=$(left_until "$1")
  if [[ -n $left ]] && ((left < PREPULL_STEP_SECONDS)); then printf '%s' "$left"; else printf '%s' "$PREPULL_STEP_SECONDS"; fi
}

# The ComfyUI image, by digest, pulled while the pins copy: kubelet then finds it present. It must
# end inside the user data (nodeadm-run restarts containerd afterwards) and never blocks the node.
# containerd's config is already written (nodeadm-config runs before cloud-init) and its root is on
# the array. The snapshotter is the CRI's (nodeadm writes snapshotter = "soci" when FastImagePull
# applies, amazon-eks-ami v20260724 nodeadm/internal/containerd/config2.template.toml), or the image
# would be unpacked again; nerdctl ships in the AMI (templates/al2023/provisioners/install-worker.sh).
# Writes "result seconds snapshotter ref".
prepull() {
  local deadline=$1 out=$RUN_DIR/pull t0 ref snap reg region left step
  t0=$(date +%s)
  printf 'skipped 0 - -\n' >"$out"
  [[ -n $IMAGE_PARAM ]] || return 0
  pull_failed() {
    say "image pre-pull failed (the node registers anyway; kubelet pulls it): $*"
    printf 'failed %s %s %s\n' $(($(date +%s) - t0)) "${snap:--}" "${ref:--}" >"$out"
  }
  if ! ref=$(timeout 60 bash "$SELF" __aws ssm get-parameter --name "$IMAGE_PARAM" --query Parameter.Value --output text 2>"$out.err"); then
    pull_failed "cannot read SSM parameter $IMAGE_PARAM: $(oneline "$out.err")"
    return 0
  fi
  if [[ ! $ref =~ ^([0-9]{12}\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?)/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$ ]]; then
    pull_failed "SSM parameter $IMAGE_PARAM holds '$ref', not an ECR image by digest"
    return 0
  fi
  reg=${BASH_REMATCH[1]} region=${BASH_REMATCH[2]}
  snap=$(sed -n 's/^[[:space:]]*snapshotter[[:space:]]*=[[:space:]]*"\([a-z0-9_-]*\)".*/\1/p' "$CONTAINERD_CONFIG" 2>/dev/null | head -n 1)
  snap=${snap:-overlayfs}
  export DOCKER_CONFIG=$RUN_DIR/docker
  # Each step waits at most PREPULL_STEP_SECONDS and never past the deadline; timeout signals the
  # step's whole process group, and -k kills what ignores SIGTERM.
  step=$(bounded_step "$deadline")
  if ! timeout -k 5 "$step" systemctl start containerd.service >"$out.err" 2>&1; then
    pull_failed "containerd did not start within ${step}s: $(oneline "$out.err")"
    return 0
  fi
  step=$(bounded_step "$deadline")
  if ! timeout -k 5 "$step" bash "$SELF" __aws ecr get-login-password --region "$region" 2>"$out.err" |
    timeout -k 5 "$step" nerdctl login --username AWS --password-stdin "$reg" >/dev/null 2>>"$out.err"; then
    pull_failed "ECR login to $reg (bound ${step}s): $(oneline "$out.err")"
    rm -rf -- "$DOCKER_CONFIG"
    return 0
  fi
  left=$(left_until "$deadline")
  if ! timeout -k 5 "${left:-600}" nerdctl --namespace k8s.io --snapshotter "$snap" pull --quiet "$ref" >"$out.err" 2>&1; then
    pull_failed "nerdctl pull $ref ($snap): $(oneline "$out.err")"
  else
    printf 'present %s %s %s\n' $(($(date +%s) - t0)) "$snap" "$ref" >"$out"
  fi
  rm -rf -- "$DOCKER_CONFIG"
}

# The boot summary as one EMF log event (PutLogEvents extracts EMF without the CloudWatch agent,
# which does not run before kubelet: CloudWatch User Guide, "Using the PutLogEvents API to send
# manually-created embedded metric format logs"). A subshell without the ERR trap and errexit:
# nothing here may hold the node, so every step is checked, bounded, and a failure is one line.
send_boot_metrics() (
  trap - ERR
  set +e
  local summary=$1 ts id stream out=$RUN_DIR/boot-metrics doc rc
  if [[ -z $METRICS_LOG_GROUP ]]; then
    log "boot metrics: METRICS_LOG_GROUP is not set; nothing sent"
    return 0
  fi
  not_sent() { say "boot metrics not sent to log group $METRICS_LOG_GROUP (the node registers anyway): $*"; }
  if [[ -z $CLUSTER_NAME || -z $BOOT_EMF_JQ ]]; then not_sent "CLUSTER_NAME or BOOT_EMF_JQ is not set"; return 0; fi
  id=$INSTANCE_ID
  if [[ -z $id ]] && command -v imds >/dev/null; then id=$(timeout 10 imds /latest/meta-data/instance-id 2>/dev/null); fi
  if [[ ! $id =~ ^i-[0-9a-f]{8,17}$ ]]; then not_sent "no EC2 instance id from IMDS (got '$id')"; return 0; fi
  stream=node-boot/$id
  ts=$(date +%s%3N)
  if ! doc=$(jq -c --arg cluster "$CLUSTER_NAME" --argjson ts "$ts" "$BOOT_EMF_JQ" "$summary" 2>"$out.err"); then
    not_sent "BOOT_EMF_JQ failed on $summary: $(oneline "$out.err")"
    return 0
  fi
  # A file, not shorthand: the message is JSON full of commas, which shorthand would split.
  jq -cn --argjson ts "$ts" --arg message "$doc" '[{timestamp: $ts, message: $message}]' >"$out.events"
  export AWS_RETRY_MODE=standard AWS_MAX_ATTEMPTS=3 AWS_PAGER=''
  rc=0
  timeout -k 5 20 bash "$SELF" __aws logs create-log-stream --log-group-name "$METRICS_LOG_GROUP" --log-stream-name "$stream" \
    >/dev/null 2>"$out.err" || rc=$?
  # The stream survives a reboot of the same instance: its second boot adds to it.
  if ((rc != 0)) && ! grep -q ResourceAlreadyExistsException "$out.err"; then
    not_sent "create-log-stream $stream: $(if ((rc == 124)); then echo "timed out after 20s"; else oneline "$out.err"; fi)"
    return 0
  fi
  rc=0
  timeout -k 5 20 bash "$SELF" __aws logs put-log-events --log-group-name "$METRICS_LOG_GROUP" --log-stream-name "$stream" \
    --log-events "file://$out.events" --output json >"$out.put" 2>"$out.err" || rc=$?
  if ((rc != 0)); then
    not_sent "put-log-events $stream: $(if ((rc == 124)); then echo "timed out after 20s"; else oneline "$out.err"; fi)"
    return 0
  fi
  # Accepted by the API but dropped (a clock far off, say): as good as not sent.
  if jq -e '.rejectedLogEventsInfo != null' "$out.put" >/dev/null 2>&1; then
    not_sent "put-log-events $stream: event rejected: $(jq -c .rejectedLogEventsInfo "$out.put")"
    return 0
  fi
  log "boot metrics sent to log group $METRICS_LOG_GROUP, stream $stream"
)

cmd_boot() {
  set -E
  trap 'block_node "boot failed at line $LINENO"' ERR
  local t_ud=${USERDATA_START:-$(date +%s)} t_boot t_raid t_filled=null t_image=null deadline result=none rc pull_pid
  t_boot=$(awk -v now="$(date +%s)" '{ printf "%d", now - $1 }' /proc/uptime)
  # nodeadm sets up the disks only after user data; doing it first makes nodeadm's later call a
  # no-op, since setup-local-disks skips an existing array, filesystem and mounts.
  say "setting up the NVMe instance store as RAID0 at $DISK"
  setup-local-disks raid0 || block_node "setup-local-disks raid0 failed"
  mountpoint -q "$DISK" || block_node "$DISK is not a mountpoint after setup-local-disks raid0 (no NVMe instance store on this instance type?)"
  t_raid=$(date +%s)
  prepare_dirs
  deadline=$((t_raid + BOOT_FILL_SECONDS))
  prepull "$deadline" &
  pull_pid=$!
  local files=0 bytes=0 secs=0 left=0 failed=0 mfiles=0 mbytes=0
  : >"$RUN_DIR/missing"
  if [[ -n ${PINS//[[:space:],]/} ]]; then
    rc=0
    BOOT_FILL_SECONDS=$(left_until "$deadline") FILL_STATS=$RUN_DIR/fill FILL_MISSING=$RUN_DIR/missing bash "$SELF" fill-pins || rc=$?
    if [[ -s $RUN_DIR/fill ]]; then read -r files bytes secs left failed mfiles mbytes <"$RUN_DIR/fill"; fi
    case $rc in
      0) result=complete t_filled=$(date +%s) ;;
      "$EX_BUDGET") result=budget ;;
      *) result=failed ;;
    esac
    if [[ $result == complete ]] && ((mfiles > 0)); then result=partial; fi
    if [[ $result != complete ]]; then say "pinned models: $result (exit $rc); the node registers and the model agent fetches the rest"; fi
  else
    t_filled=$(date +%s)
  fi
  wait "$pull_pid" || true
  local ires isecs snap iref
  read -r ires isecs snap iref <"$RUN_DIR/pull"
  if [[ $ires == present ]]; then t_image=$(date +%s); fi
  # Kubelet may label its own Node at registration with labels outside the kubernetes.io
  # namespaces (NodeRestriction); nodeadm-run reads this drop-in and merges --node-labels
  # (amazon-eks-ami v20260724 nodeadm/internal/api/merge.go): kubelet flags of all NodeConfigs are
  # appended, and kubelet merges the values of every --node-labels, so Karpenter's labels stay.
  mkdir -p "$BOOT_ROOT/etc/eks/nodeadm.d"
  printf 'apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  kubelet:\n    flags:\n      - --node-labels=comfyui.studio/models-missing=%d,comfyui.studio/boot-at=%d\n' \
    "$mfiles" "$t_boot" >"$BOOT_ROOT/etc/eks/nodeadm.d/90-comfyui-models.yaml"
  local json
  json=$(jq -cn --arg type "$INSTANCE_TYPE" --argjson t_boot "$t_boot" \
    --argjson t_ud "$t_ud" --argjson t_raid "$t_raid" --argjson t_filled "$t_filled" --argjson t_image "$t_image" \
    --arg result "$result" --argjson files "$files" --argjson bytes "$bytes" --argjson secs "$secs" \
    --argjson mfiles "$mfiles" --argjson mbytes "$mbytes" --rawfile missing "$RUN_DIR/missing" \
    --arg ires "$ires" --argjson isecs "$isecs" --arg snap "$snap" --arg iref "$iref" '
    {schema: 1, instance_type: $type, t_boot: $t_boot, t_userdata: $t_ud, t_raid: $t_raid,
     t_filled: $t_filled, t_image: $t_image,
     fill: {result: $result, files: $files, bytes: $bytes, seconds: $secs,
            mb_per_s: (if $secs > 0 then ($bytes / $secs / 100000 | floor) / 10 else null end),
            missing_files: $mfiles, missing_bytes: $mbytes,
            missing: ($missing | split("\n") | map(select(length > 0) | split("\t")[1]))},
     image: {ref: $iref, result: $ires, seconds: $isecs, snapshotter: $snap}}')
  mkdir -p "$SUMMARY_DIR"
  printf '%s\n' "$json" >"$SUMMARY_DIR/boot-summary.json"
  logger -t comfyui-boot -- "$json" 2>/dev/null || true
  say "boot: pins $result, $files file(s) $(human "$bytes") in ${secs}s; missing $mfiles file(s) $(human "$mbytes"); image $ires in ${isecs}s; $(($(date +%s) - t_boot))s since kernel start"
  send_boot_metrics "$SUMMARY_DIR/boot-summary.json" || true
}

main() {
  SELF=$(readlink -f -- "${BASH_SOURCE[0]}")
  local cmd=${1:-}
  load_settings
  case $cmd in
    boot) cmd_boot ;;
    fill-pins) cmd_fill_pins ;;
    # Internal: one xargs worker, and one CLI call as a command of its own (so `timeout` bounds it).
    __get) RUN_DIR=$_CM_RUN_DIR get_one "$2" ;;
    __aws) shift; aws_cli "$@" ;;
    -h | --help | help) echo "usage: $PROG boot | fill-pins  (settings: ${SETTINGS[*]})" >&2 ;;
    *) die "$EX_USAGE" "unknown subcommand '$cmd' (usage: $PROG boot | fill-pins)" ;;
  esac
}

main "$@"
