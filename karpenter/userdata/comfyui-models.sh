#!/usr/bin/env bash
# comfyui-models: keeps a GPU node's local copy of the models bucket on the NVMe array.
#
# Installed by the GPU user-data (gpuUserData.ts) at /usr/local/bin/comfyui-models. The boot fill,
# the comfyui-models-rest.service unit and every SSM command from the sync Lambda run it, so one
# implementation decides what "complete and current" means for a model file.
#
#   comfyui-models boot        the GPU user-data's work: RAID0, hot set, image pre-pull, summary
#   comfyui-models fill-hot    copy the hot set (HOT_SET), within BOOT_FILL_SECONDS (a hard deadline)
#   comfyui-models fill-rest   copy everything else that fits the disk
#   comfyui-models apply       read "put<TAB>key" / "delete<TAB>key" lines from stdin and bring
#                              each key to what the bucket holds now
#   comfyui-models status      print what is present
#
# Exit codes: 0 ok (fill-hot: every hot file that fits is present; what does not fit is reported,
# not an error); 1 a transfer or apply line failed; 2 usage or configuration error; 3 bucket not
# reachable; 4 (reserved, no longer returned: a hot set larger than the disk registers with what
# fits); 75 boot time budget reached (continue in background).
#
# Disk reserve (what a fill leaves free on the array it shares with kubelet and containerd):
#   EVICTION_PERCENT of the array (kubelet's evictionHard nodefs.available, 10% as nodeadm sets it,
#   amazon-eks-ami v20260724 nodeadm/internal/kubelet/config.go) + MARGIN_GB, a floor no copy ever
#   crosses, plus, when planning, IMAGE_GB + SCRATCH_GB_PER_GPU x the node's GPUs. The GPUs (and the
#   NIC's baseline Mbit/s) come from INSTANCE_FACTS ("type=gpus:N,mbps:M ...") for the instance type read
#   from IMDSv2 (INSTANCE_TYPE overrides); an unknown type assumes the largest GPU count listed.
#   RESERVE_GB, when set, replaces the computed reserve and floor.
#
# A hot set larger than the disk: files are taken in hot-set order (entry by entry as listed, keys
# in bucket order within an entry; the whole bucket when HOT_SET is empty), each one that fits is
# planned, the rest are "missing": logged, listed in $STATE_DIR/.hot-missing and the boot summary,
# and the node label comfyui.studio/models-missing=<count> says so in Kubernetes.
#
# Boot summary (boot): $SUMMARY_DIR/boot-summary.json, the same JSON on one journal line (tag
# comfyui-boot) and a human line on the console. Stable fields: schema (1), instance_type, gpus,
# t_boot (kernel start, epoch s, from /proc/uptime), t_userdata, t_raid, t_filled, t_image (epoch s,
# null when not reached), fill {result: complete|partial|budget|failed, files, bytes, seconds,
# mb_per_s, missing_files, missing_bytes, missing [keys]}, image {ref, result:
# present|failed|skipped, seconds, snapshotter}.
#
# Boot metrics (boot): the summary, turned into one CloudWatch embedded-metric-format document by
# the jq program BOOT_EMF_JQ (generated from observability/metrics.ts, args cluster and ts), is sent
# as one log event to log group METRICS_LOG_GROUP, stream node-boot/<instance id> (IMDSv2;
# INSTANCE_ID overrides), with CLUSTER_NAME as the dimension. Best effort: a failure is one line on
# the console and in the journal, never a failed boot; METRICS_LOG_GROUP empty: nothing is sent.
# The node label comfyui.studio/boot-at=<t_boot> lets the cluster side time kernel start ->
# registered -> ComfyUI ready.
#
# Settings come from the environment, else from /etc/comfyui-models.env (COMFYUI_MODELS_ENV_FILE
# overrides the path). The environment wins so that a systemd unit or an operator can override one
# value without editing the file.
#
# Image pre-pull (boot): IMAGE_PARAM names the SSM parameter that holds the ComfyUI image as
# <account>.dkr.ecr.<region>.amazonaws.com/<repo>@sha256:<digest>; it is read at boot, so a new image
# changes no node's user data. Empty: no pre-pull. Every step of it is bounded, so a hung step can
# never hold the user data (and so kubelet's registration, which Karpenter gives 15 minutes): the
# SSM read 60 s, starting containerd and the ECR login (the CLI's token call and nerdctl login)
# PREPULL_STEP_SECONDS each (default 60), all of them and the pull itself also by the boot fill's
# deadline (BOOT_FILL_SECONDS after the array is up). BOOT_ROOT prefixes the node's fixed paths
# (/etc, /var/log, /dev/console): empty on a node, a sandbox in the tests.
set -euo pipefail
# Files land on a hostPath that ComfyUI (not root) reads.
umask 022

readonly PROG=comfyui-models
# shellcheck disable=SC2034 # EX_NOSPACE: kept so the numbers stay stable for SSM and the user data
readonly EX_FAILED=1 EX_USAGE=2 EX_BUCKET=3 EX_NOSPACE=4 EX_BUDGET=75

# Same values as karpenter/nodeContract.ts; the unit test fails if they drift apart.
readonly DEFAULT_MODELS_DIR=/mnt/k8s-disks/0/comfyui-models
readonly DEFAULT_STAGING_DIR=/mnt/k8s-disks/0/.comfyui-models-staging
readonly DEFAULT_STATE_DIR=/mnt/k8s-disks/0/.comfyui-models-state
readonly DEFAULT_MODEL_FOLDERS="audio_encoders checkpoints clip clip_vision configs controlnet diffusers diffusion_models embeddings gligen hypernetworks latent_upscale_models loras model_patches photomaker style_models text_encoders unet upscale_models vae vae_approx"

readonly SETTINGS=(MODELS_BUCKET AWS_REGION AWS_ENDPOINT_URL MODELS_DIR STAGING_DIR STATE_DIR HOT_SET
  HOT_SET_B64 MODEL_FOLDERS PARALLEL RETRIES BOOT_FILL_SECONDS RESERVE_GB EVICTION_PERCENT MARGIN_GB
  IMAGE_GB SCRATCH_GB_PER_GPU INSTANCE_TYPE INSTANCE_FACTS TRANSFER_CLIENT SUMMARY_DIR IMAGE_PARAM
  PREPULL_STEP_SECONDS CONTAINERD_CONFIG DISK USERDATA_START BOOT_ROOT METRICS_LOG_GROUP CLUSTER_NAME BOOT_EMF_JQ INSTANCE_ID
  AWS_ENDPOINT_URL_CLOUDWATCH_LOGS)
readonly G=1000000000

log() { printf '%s: %s %s\n' "$PROG" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() {
  local code=$1
  shift
  log "error: $*"
  exit "$code"
}

# The CLI's error text, on one line for the journal and the SSM output.
oneline() { tr -s '\n\t ' ' ' <"$1" | sed 's/^ //; s/ $//'; }

# Decimal units, as instance store and S3 sizes are quoted.
human() {
  local b=$1
  if ((b < 0)); then b=0; fi
  if ((b >= 1000000000)); then printf '%d.%02d GB' $((b / 1000000000)) $(((b % 1000000000) / 10000000))
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
  : "${BOOT_ROOT:=}" "${MODELS_BUCKET:=}" "${AWS_REGION:=}" "${HOT_SET:=}" "${HOT_SET_B64:=}"
  : "${MODELS_DIR:=$DEFAULT_MODELS_DIR}" "${STAGING_DIR:=$DEFAULT_STAGING_DIR}" "${STATE_DIR:=$DEFAULT_STATE_DIR}"
  : "${MODEL_FOLDERS:=$DEFAULT_MODEL_FOLDERS}" "${PARALLEL:=8}" "${RETRIES:=3}"
  : "${BOOT_FILL_SECONDS:=600}" "${RESERVE_GB:=}" "${EVICTION_PERCENT:=10}" "${MARGIN_GB:=10}"
  : "${IMAGE_GB:=30}" "${SCRATCH_GB_PER_GPU:=20}" "${INSTANCE_TYPE:=}" "${INSTANCE_FACTS:=}"
  : "${TRANSFER_CLIENT:=crt}" "${SUMMARY_DIR:=$BOOT_ROOT/var/log/comfyui-models}" "${IMAGE_PARAM:=}" "${PREPULL_STEP_SECONDS:=60}"
  : "${CONTAINERD_CONFIG:=$BOOT_ROOT/etc/containerd/config.toml}" "${DISK:=/mnt/k8s-disks/0}" "${USERDATA_START:=}"
  : "${METRICS_LOG_GROUP:=}" "${CLUSTER_NAME:=}" "${BOOT_EMF_JQ:=}" "${INSTANCE_ID:=}"
  # The user data carries the hot set base64-encoded so that its MIME part stays pure ASCII.
  if [[ -z $HOT_SET && -n $HOT_SET_B64 ]]; then
    HOT_SET=$(printf '%s' "$HOT_SET_B64" | base64 -d) || die "$EX_USAGE" "HOT_SET_B64 is not base64"
  fi
  for name in PARALLEL RETRIES BOOT_FILL_SECONDS EVICTION_PERCENT MARGIN_GB IMAGE_GB SCRATCH_GB_PER_GPU PREPULL_STEP_SECONDS; do
    [[ ${!name} =~ ^[0-9]+$ ]] || die "$EX_USAGE" "$name must be a non-negative integer, got '${!name}'"
  done
  [[ $RESERVE_GB =~ ^[0-9]*$ ]] || die "$EX_USAGE" "RESERVE_GB must be a non-negative integer, got '$RESERVE_GB'"
  [[ $TRANSFER_CLIENT == crt || $TRANSFER_CLIENT == classic ]] || die "$EX_USAGE" "TRANSFER_CLIENT must be crt or classic"
  ((EVICTION_PERCENT < 100)) || die "$EX_USAGE" "EVICTION_PERCENT must be below 100"
  ((PARALLEL >= 1)) || die "$EX_USAGE" "PARALLEL must be at least 1"
  ((PREPULL_STEP_SECONDS >= 1)) || die "$EX_USAGE" "PREPULL_STEP_SECONDS must be at least 1"
  # An empty AWS_ENDPOINT_URL must not reach CLIs that read it: unset means the real S3 endpoint.
  if [[ -z ${AWS_ENDPOINT_URL:-} ]]; then unset AWS_ENDPOINT_URL; fi
  if [[ -z ${AWS_ENDPOINT_URL_CLOUDWATCH_LOGS:-} ]]; then unset AWS_ENDPOINT_URL_CLOUDWATCH_LOGS; fi
  # Children (xargs workers) get the resolved values and skip the file.
  export "${SETTINGS[@]}"
  export COMFYUI_MODELS_ENV_FILE=
}

require_bucket() {
  [[ -n $MODELS_BUCKET ]] || die "$EX_USAGE" "MODELS_BUCKET is not set (environment or settings file $SETTINGS_FILE)"
  [[ -n $AWS_REGION ]] || die "$EX_USAGE" "AWS_REGION is not set"
}

# Explicit flags rather than relying on AWS_ENDPOINT_URL: CLI releases before 2.13 ignore it. The
# service-specific variable for CloudWatch Logs (AWS_ENDPOINT_URL_<serviceId>, serviceId "CloudWatch
# Logs" in botocore's logs/2014-03-28/service-2.json; AWS SDKs and Tools Reference Guide,
# "Service-specific endpoints") is honoured the same way, so a test can put S3 and Logs apart.
aws_cli() {
  local -a global=(--region "$AWS_REGION")
  local endpoint=${AWS_ENDPOINT_URL:-}
  if [[ ${1:-} == logs && -n ${AWS_ENDPOINT_URL_CLOUDWATCH_LOGS:-} ]]; then endpoint=$AWS_ENDPOINT_URL_CLOUDWATCH_LOGS; fi
  if [[ -n $endpoint ]]; then global+=(--endpoint-url "$endpoint"); fi
  aws "${global[@]}" "$@"
}

# Keys reach this script from the bucket listing and from SSM; both are untrusted paths on the host.
# Sets KEY_PROBLEM and returns 1 when the key must not be written under MODELS_DIR.
check_key() {
  # C locale: ${#key} counts bytes, as S3's 1024 limit does.
  local key=$1 seg folder LC_ALL=C
  KEY_PROBLEM=
  if [[ -z $key ]]; then KEY_PROBLEM="empty key"
  elif ((${#key} > 1024)); then KEY_PROBLEM="key longer than 1024 bytes"
  elif [[ $key == *[[:cntrl:]]* ]]; then KEY_PROBLEM="key contains a control character (NUL, tab or newline)"
  elif [[ $key == /* ]]; then KEY_PROBLEM="key starts with '/'"
  elif [[ $key == */ ]]; then KEY_PROBLEM="key ends with '/' (a folder marker, not a file)"
  elif [[ $key != */* ]]; then KEY_PROBLEM="key is not inside a model folder"
  else
    local -a segs
    IFS=/ read -r -a segs <<<"$key"
    for seg in "${segs[@]}"; do
      case $seg in
        '') KEY_PROBLEM="key has an empty path segment ('//')" ;;
        . | ..) KEY_PROBLEM="key has a '$seg' path segment" ;;
      esac
      [[ -z $KEY_PROBLEM ]] || return 1
    done
    for folder in $MODEL_FOLDERS; do
      [[ ${segs[0]} != "$folder" ]] || return 0
    done
    KEY_PROBLEM="top-level folder '${segs[0]}' is not a model folder (MODEL_FOLDERS)"
  fi
  [[ -z $KEY_PROBLEM ]]
}

# HOT_SET entries are exact keys or folders ("checkpoints" and "checkpoints/" both mean the folder).
# Folder boundaries matter: a bare string prefix "clip" would also pull in "clip_vision/".
HOT_ENTRIES=()
parse_hot_set() {
  local entry
  HOT_ENTRIES=()
  while IFS= read -r entry; do
    entry=${entry#"${entry%%[![:space:]]*}"}
    entry=${entry%"${entry##*[![:space:]]}"}
    entry=${entry%/}
    if [[ -n $entry ]]; then HOT_ENTRIES+=("$entry"); fi
  done < <(printf '%s\n' "${HOT_SET//,/$'\n'}")
}

# Remembers which entries matched, so a typo in the hot set is reported instead of silently
# registering a node without the model it was meant to have.
declare -A HOT_MATCHED=()
HOT_INDEX=0
in_hot_set() {
  local key=$1 entry i=0
  ((${#HOT_ENTRIES[@]} > 0)) || return 0
  for entry in "${HOT_ENTRIES[@]}"; do
    i=$((i + 1))
    if [[ $key == "$entry" || $key == "$entry"/* ]]; then
      HOT_MATCHED[$entry]=1
      HOT_INDEX=$i
      return 0
    fi
  done
  return 1
}

# A key is current when its state record matches the object and the file is still there; the
# record alone could outlive a file an operator removed by hand.
is_current() {
  local key=$1 etag=$2 size=$3 s_etag s_size
  [[ -f $STATE_DIR/$key && -f $MODELS_DIR/$key ]] || return 1
  read -r s_etag s_size <"$STATE_DIR/$key" || return 1
  [[ $s_etag == "$etag" && $s_size == "$size" ]] || return 1
  [[ $(stat -c %s -- "$MODELS_DIR/$key") == "$size" ]]
}

free_bytes() {
  local avail
  avail=$(df -B1 --output=avail -- "$MODELS_DIR" 2>&1 | tail -n 1 | tr -d ' ')
  [[ $avail =~ ^[0-9]+$ ]] || die "$EX_USAGE" "cannot read the free space of $MODELS_DIR: $avail"
  printf '%s\n' "$avail"
}

# The node's GPU count and NIC speed from INSTANCE_FACTS, for the instance type IMDSv2 reports
# (the AMI's imds helper gets a session token). Unknown type: the largest GPU count listed, so the
# reserve errs on the side of kubelet (8, the most GPUs an EC2 instance has, when nothing is listed),
# and the CLI's own bandwidth default.
GPUS=1 MBPS='' NODE_TYPE=''
node_facts() {
  local e most=0
  NODE_TYPE=$INSTANCE_TYPE GPUS='' MBPS=''
  if [[ -z $NODE_TYPE ]] && command -v imds >/dev/null; then
    NODE_TYPE=$(timeout 10 imds /latest/meta-data/instance-type 2>/dev/null) || NODE_TYPE=
  fi
  for e in $INSTANCE_FACTS; do
    [[ $e =~ ^([a-z0-9.-]+)=gpus:([0-9]+),mbps:([0-9]+)$ ]] || continue
    if ((BASH_REMATCH[2] > most)); then most=${BASH_REMATCH[2]}; fi
    if [[ ${BASH_REMATCH[1]} == "$NODE_TYPE" ]]; then GPUS=${BASH_REMATCH[2]} MBPS=${BASH_REMATCH[3]}; fi
  done
  if [[ -z $GPUS ]]; then
    GPUS=$((most > 0 ? most : 8))
    log "instance type '${NODE_TYPE:-unknown}' not in INSTANCE_FACTS: assuming $GPUS GPU(s)"
  fi
}

# RESERVE: bytes a plan leaves free; FLOOR: what a running copy never eats into (kubelet's
# eviction line plus the margin), so an image pulled meanwhile cannot push the node into DiskPressure.
RESERVE=0 FLOOR=0
compute_reserve() {
  local size
  size=$(df -B1 --output=size -- "$MODELS_DIR" 2>&1 | tail -n 1 | tr -d ' ')
  [[ $size =~ ^[0-9]+$ ]] || die "$EX_USAGE" "cannot read the size of $MODELS_DIR: $size"
  node_facts
  if [[ -n $RESERVE_GB ]]; then
    RESERVE=$((RESERVE_GB * G)) FLOOR=$((RESERVE_GB * G))
    return 0
  fi
  FLOOR=$(((size * EVICTION_PERCENT + 99) / 100 + MARGIN_GB * G))
  RESERVE=$((FLOOR + (IMAGE_GB + SCRATCH_GB_PER_GPU * GPUS) * G))
  log "reserve $(human "$RESERVE") of $(human "$size"): ${EVICTION_PERCENT}% eviction line + ${MARGIN_GB} GB margin + ${IMAGE_GB} GB image + ${SCRATCH_GB_PER_GPU} GB x $GPUS GPU(s) scratch"
}

# The CLI's CRT transfer client (C, multi-connection) instead of the classic Python one, in a
# config file of the tool's own; preferred_transfer_client and target_bandwidth exist from CLI 2.9
# (awscli/topics/s3-config.rst). Each of the PARALLEL processes aims at its share of the NIC.
aws_config() {
  [[ $TRANSFER_CLIENT == crt ]] || return 0
  export AWS_CONFIG_FILE=$RUN_DIR/aws-config
  printf '[default]\ns3 =\n  preferred_transfer_client = crt\n' >"$AWS_CONFIG_FILE"
  if [[ -n $MBPS ]]; then printf '  target_bandwidth = %d\n' $((MBPS * 125000 / PARALLEL)) >>"$AWS_CONFIG_FILE"; fi
}

# A staging dir belongs to a live run when its pid still runs this tool; anything else is left over
# from a crash or a reboot and only wastes the disk the fill needs.
clean_stale_staging() {
  local entry pid
  for entry in "$STAGING_DIR"/* "$STAGING_DIR"/.[!.]*; do
    [[ -e $entry ]] || continue
    if [[ $entry =~ /run\.([0-9]+)$ ]]; then
      pid=${BASH_REMATCH[1]}
      if kill -0 "$pid" 2>/dev/null && grep -qa comfyui-models "/proc/$pid/cmdline" 2>/dev/null; then
        continue
      fi
    fi
    log "removing stale staging entry ${entry##*/}"
    rm -rf -- "$entry"
  done
}

RUN_DIR=
prepare_dirs() {
  mkdir -p -- "$MODELS_DIR" "$STAGING_DIR" "$STATE_DIR/.locks"
  # The final mv is only atomic within one filesystem; across filesystems it is a copy that
  # ComfyUI could observe half-written.
  if [[ $(stat -c %d -- "$MODELS_DIR") != "$(stat -c %d -- "$STAGING_DIR")" ]]; then
    die "$EX_USAGE" "STAGING_DIR ($STAGING_DIR) must be on the same filesystem as MODELS_DIR ($MODELS_DIR)"
  fi
  clean_stale_staging
  RUN_DIR=$STAGING_DIR/run.$$
  mkdir -p -- "$RUN_DIR"
  trap 'rm -rf -- "$RUN_DIR"' EXIT
}

# ---- one transfer (runs in an xargs worker) -------------------------------------------------

# Serialises fill-rest and an SSM apply touching the same key, so a delete cannot be undone by a
# download already in flight and a state record always describes the file beside it. Held until
# the worker exits.
lock_key() {
  local fd
  exec {fd}>"$STATE_DIR/.locks/$(printf '%s' "$1" | md5sum | cut -d ' ' -f 1)"
  flock "$fd"
}

# One results line per key: status, bytes, reason (the ETag when ok or unchanged), key (key last:
# it may contain spaces).
record() {
  local reason=${3//[[:cntrl:]]/ }
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "${reason:--}" "$4" >>"$_CM_RESULTS"
}

# Prints "etag size sse" of the object, or fails with the CLI's message on stderr.
head_object() {
  aws_cli s3api head-object --bucket "$MODELS_BUCKET" --key "$1" \
    --query '[ETag,ContentLength,ServerSideEncryption]' --output text | tr -d '"' | tr '\t' ' '
}

# Fresh metadata into the caller's etag/size/sse (transfer_one's locals, by bash's dynamic scope).
# On failure sets PROBLEM, and PERMANENT when waiting cannot help (missing or forbidden object),
# and GONE when the bucket answers but no longer has the key.
refresh_meta() {
  local meta
  if ! meta=$(head_object "$key" 2>"$err"); then
    PROBLEM="head-object failed: $(oneline "$err")"
    if grep -qE '\((404|403|NoSuchKey|AccessDenied|Forbidden)\)|Not Found' "$err"; then PERMANENT=1; fi
    # HEAD answers 404 for a missing bucket too: a wrong MODELS_BUCKET must fail, not empty the node.
    if grep -qE '\((404|NoSuchKey)\)|Not Found' "$err"; then
      if aws_cli s3api head-bucket --bucket "$MODELS_BUCKET" >/dev/null 2>&1; then GONE=1; else PROBLEM+="; bucket $MODELS_BUCKET not reachable"; fi
    fi
    return 1
  fi
  read -r etag size sse <<<"$meta"
}

# Checks the staged file against the object, setting PROBLEM on a mismatch. The listing already gave
# size and ETag, so the common case costs no request beyond the GET; a HEAD is spent only where the
# ETag alone cannot vouch for the bytes.
verify_staged() {
  local tmp=$1 actual old=$etag
  actual=$(stat -c %s -- "$tmp")
  if [[ $actual != "$size" ]]; then
    PROBLEM="size $actual != expected $size"
    return 1
  fi
  if [[ $etag =~ ^[0-9a-f]{32}$ ]]; then
    # Single-part upload: the ETag is the MD5, except under SSE-KMS, which only a HEAD reveals.
    actual=$(md5sum -- "$tmp" | cut -d ' ' -f 1)
    [[ $actual != "$etag" ]] || return 0
    refresh_meta || return 1
    if [[ $etag != "$old" ]]; then
      PROBLEM="object changed during download (ETag $old -> $etag)"
      return 1
    fi
    [[ $sse != aws:kms* ]] || return 0
    PROBLEM="md5 $actual != ETag $etag"
    return 1
  fi
  # Multipart ETags ("...-N") cannot be recomputed without the part size, and the CLI fetches such
  # objects with ranged GETs, which mix two versions if the object is replaced meanwhile: the ETag
  # must not have moved during the download.
  refresh_meta || return 1
  if [[ $etag != "$old" ]]; then
    PROBLEM="object changed during download (ETag $old -> $etag)"
    return 1
  fi
}

# $1: "size<TAB>etag<TAB>key" from the listing, or "-<TAB>-<TAB>key" when only the key is known.
transfer_one() {
  local rec=$1 key etag size sse='' st
  size=${rec%%$'\t'*}
  rec=${rec#*$'\t'}
  etag=${rec%%$'\t'*}
  key=${rec#*$'\t'}
  if ((_CM_DEADLINE > 0 && $(date +%s) >= _CM_DEADLINE)); then
    record left "${size/#-/0}" "time budget reached" "$key"
    return 0
  fi
  if ! check_key "$key"; then
    record failed 0 "$KEY_PROBLEM" "$key"
    return 0
  fi
  local target=$MODELS_DIR/$key state=$STATE_DIR/$key
  lock_key "$key"

  local attempt=0 err=$RUN_DIR/err.$BASHPID tmp usable t0 PROBLEM='' PERMANENT='' GONE=''
  while :; do
    if ((attempt > 0)); then
      local delay=$((2 ** attempt))
      ((delay <= 30)) || delay=30
      log "retrying $key in ${delay}s (attempt $((attempt + 1)) of $((RETRIES + 1))): $PROBLEM"
      sleep "$delay"
    fi
    attempt=$((attempt + 1))
    # The listing's size and ETag serve the first attempt; apply and retries ask S3 afresh.
    if [[ $etag == - ]] || ((attempt > 1)); then
      if ! refresh_meta; then
        if [[ -n $PERMANENT ]] || ((attempt > RETRIES)); then break; fi
        continue
      fi
    fi
    if is_current "$key" "$etag" "$size"; then
      record unchanged "$size" "$etag" "$key"
      return 0
    fi
    usable=$(($(free_bytes) - _CM_FLOOR))
    if ((size > usable)); then
      log "not copying $key: $(human "$size") needed, $(human "$usable") free above the eviction floor"
      record nospace "$size" "disk full" "$key"
      return 0
    fi
    tmp=$(mktemp -p "$RUN_DIR" part.XXXXXXXX)
    t0=$SECONDS
    if ! aws_cli s3 cp --only-show-errors --no-progress "s3://$MODELS_BUCKET/$key" "$tmp" 2>"$err"; then
      PROBLEM="download failed: $(oneline "$err")"
    elif verify_staged "$tmp"; then
      chmod 0644 -- "$tmp"
      mkdir -p -- "${target%/*}" "${state%/*}"
      # The rename is the moment the file becomes visible: complete or not at all.
      if mv -fT -- "$tmp" "$target"; then
        printf '%s %s\n' "$etag" "$size" >"$state.tmp.$BASHPID"
        mv -fT -- "$state.tmp.$BASHPID" "$state"
        log "fetched $key ($(human "$size") in $((SECONDS - t0))s)"
        record ok "$size" "$etag" "$key"
        return 0
      fi
      PROBLEM="could not move into $MODELS_DIR"
    fi
    rm -f -- "$tmp"
    if [[ -n $PERMANENT ]] || ((attempt > RETRIES)); then break; fi
  done
  # Deleted from the bucket since it was listed or announced: the node follows the bucket.
  if [[ -n $GONE ]]; then
    if rm -f -- "$target" "$state"; then
      log "removed $key: not in bucket $MODELS_BUCKET"
      record gone 0 - "$key"
      return 0
    fi
    PROBLEM="not in the bucket, and could not remove it from $MODELS_DIR"
  fi
  log "FAILED $key after $attempt attempt(s): $PROBLEM"
  # Waiting cannot fix a denied object: the node registers without it (reported missing).
  if [[ -n $PERMANENT && -z ${_CM_APPLY:-} ]]; then st=denied; else st=failed; fi
  record "$st" "${size/#-/0}" "$PROBLEM" "$key"
}

# ---- running a batch ------------------------------------------------------------------------

# Seconds left before the deadline $1 (0 = none: prints nothing, so `timeout` is not used).
left_until() {
  local left
  ((${1:-0} > 0)) || return 0
  left=$(($1 - $(date +%s)))
  if ((left < 1)); then left=1; fi
  printf '%s' "$left"
}

# $1: file of NUL-terminated transfer_one records, $2: deadline (epoch s, 0 = none). At the
# deadline every worker and its CLI is stopped (timeout signals its whole process group): their
# partial files are in RUN_DIR only, removed on exit, so nothing half-copied is ever visible and
# the keys are "left" for comfyui-models-rest.service. Sets the RES_* summary globals.
run_transfers() {
  local plan=$1 deadline=$2 left cut=
  export _CM_RESULTS=$RUN_DIR/results _CM_DEADLINE=$deadline _CM_RUN_DIR=$RUN_DIR _CM_FLOOR=$FLOOR
  : >"$_CM_RESULTS"
  left=$(left_until "$deadline")
  # Workers never fail the pipeline: every outcome is a results line, and a missing line is a failure.
  if [[ -n $left ]]; then
    timeout -k 3 "$left" xargs -0 -r -n 1 -P "$PARALLEL" -- bash "$SELF" __transfer <"$plan" || cut=$?
    if [[ $cut != 124 && $cut != 137 ]]; then cut=; else log "time budget reached: stopped the transfers in flight"; fi
  else
    xargs -0 -r -n 1 -P "$PARALLEL" -- bash "$SELF" __transfer <"$plan" || true
  fi

  local -A seen=()
  local st bytes reason key rec size
  RES_OK=0 RES_OK_BYTES=0 RES_UNCHANGED=0 RES_LEFT=0 RES_LEFT_BYTES=0
  RES_FAILED=()
  RES_REASON=()
  declare -gA RES_STATUS=() RES_WHY=() RES_BYTES=()
  while IFS=$'\t' read -r st bytes reason key; do
    seen[$key]=1
    RES_STATUS[$key]=$st
    RES_WHY[$key]=$reason
    RES_BYTES[$key]=$bytes
    case $st in
      ok) RES_OK=$((RES_OK + 1)) RES_OK_BYTES=$((RES_OK_BYTES + bytes)) ;;
      unchanged) RES_UNCHANGED=$((RES_UNCHANGED + 1)) ;;
      gone) ;;
      left) RES_LEFT=$((RES_LEFT + 1)) RES_LEFT_BYTES=$((RES_LEFT_BYTES + bytes)) ;;
      nospace | denied) printf '%s\t%s\t%s\n' "$bytes" "$key" "$reason" >>"$RUN_DIR/missing" ;;
      *) RES_FAILED+=("$key") RES_REASON+=("$reason") ;;
    esac
  done <"$_CM_RESULTS"
  while IFS= read -r -d '' rec; do
    size=${rec%%$'\t'*}
    key=${rec#*$'\t'}
    key=${key#*$'\t'}
    [[ -z ${seen[$key]:-} ]] || continue
    if [[ -n $cut ]]; then
      RES_LEFT=$((RES_LEFT + 1)) RES_LEFT_BYTES=$((RES_LEFT_BYTES + ${size/#-/0}))
      RES_STATUS[$key]=left RES_WHY[$key]="time budget reached"
    else
      RES_FAILED+=("$key") RES_REASON+=("transfer ended without a result")
      RES_STATUS[$key]=failed RES_WHY[$key]="transfer ended without a result"
    fi
  done <"$plan"
}

report_failures() {
  local i
  for i in "${!RES_FAILED[@]}"; do
    log "  failed: ${RES_FAILED[$i]}: ${RES_REASON[$i]}"
  done
}

# ---- subcommands ----------------------------------------------------------------------------

list_bucket() {
  local out=$1 err=$RUN_DIR/list.err left
  left=$(left_until "$2")
  # The CLI follows continuation tokens itself; Key goes last so spaces and tabs stay in it.
  local rc=0
  ${left:+timeout -k 3 "$left"} bash "$SELF" __aws s3api list-objects-v2 --bucket "$MODELS_BUCKET" \
    --query 'Contents[].[Size,ETag,Key]' --output text >"$out" 2>"$err" || rc=$?
  # A listing cut by the deadline is S3 too slow to answer: transient, like an unreachable bucket.
  if ((rc == 124 || rc == 137)); then die "$EX_BUCKET" "listing bucket $MODELS_BUCKET did not finish within the time budget"; fi
  if ((rc != 0)); then die "$EX_BUCKET" "bucket $MODELS_BUCKET not reachable: $(oneline "$err")"; fi
}

# fill-hot also writes "files bytes seconds left_files missing_files missing_bytes" to $FILL_STATS
# and the missing hot keys ("bytes<TAB>key<TAB>why") to $STATE_DIR/.hot-missing, for the boot summary.
cmd_fill() {
  local mode=$1 start deadline=0
  start=$(date +%s)
  require_bucket
  prepare_dirs
  parse_hot_set
  if [[ $mode == rest && ${#HOT_ENTRIES[@]} -eq 0 ]]; then
    log "HOT_SET is empty, so the hot set is the whole bucket: nothing for fill-rest"
    return 0
  fi
  if [[ $mode == hot ]] && ((BOOT_FILL_SECONDS > 0)); then deadline=$((start + BOOT_FILL_SECONDS)); fi
  compute_reserve
  aws_config

  local listing=$RUN_DIR/listing plan=$RUN_DIR/plan cand=$RUN_DIR/cand missing=$RUN_DIR/missing
  list_bucket "$listing" "$deadline"
  : >"$plan"
  : >"$cand"
  : >"$missing"
  local size etag key why present=0 outside=0 need=0 need_bytes=0 skipped=0 usable
  usable=$(($(free_bytes) - RESERVE))
  while IFS=$'\t' read -r size etag key; do
    if [[ ! $size =~ ^[0-9]+$ ]]; then
      # "None" is how the CLI prints a page without Contents (an empty bucket).
      [[ $size == None ]] || log "warning: ignoring unparsable listing line: $size $etag $key"
      continue
    fi
    [[ $key != */ ]] || continue
    etag=${etag//\"/}
    if ! check_key "$key"; then
      outside=$((outside + 1))
      continue
    fi
    if [[ $mode == hot ]]; then in_hot_set "$key" || continue; else ! in_hot_set "$key" || continue; fi
    if is_current "$key" "$etag" "$size"; then
      present=$((present + 1))
      continue
    fi
    printf '%s\t%s\t%s\t%s\n' "${HOT_INDEX:-0}" "$size" "$etag" "$key" >>"$cand"
  done <"$listing"
  # Hot-set order decides what a too-small disk gets: the operator lists what matters first.
  while IFS=$'\t' read -r _ size etag key; do
    if ((need_bytes + size > usable)); then
      why="does not fit: $(human "$size"), $(human $((usable - need_bytes))) usable after a $(human "$RESERVE") reserve"
      if [[ $mode == hot ]]; then printf '%s\t%s\t%s\n' "$size" "$key" "$why" >>"$missing"; fi
      log "skipping $key ($(human "$size")): $why"
      skipped=$((skipped + 1))
      continue
    fi
    need=$((need + 1))
    need_bytes=$((need_bytes + size))
    printf '%s\t%s\t%s\0' "$size" "$etag" "$key" >>"$plan"
  done < <(sort -s -t $'\t' -k 1,1n "$cand")
  if ((outside > 0)); then log "ignoring $outside key(s) outside the model folders"; fi
  if [[ $mode == hot ]]; then
    for key in "${HOT_ENTRIES[@]}"; do
      [[ -n ${HOT_MATCHED[$key]:-} ]] || log "warning: HOT_SET entry '$key' matches no model in bucket $MODELS_BUCKET"
    done
  fi

  RES_OK=0 RES_OK_BYTES=0 RES_LEFT=0 RES_FAILED=()
  if ((need == 0)); then
    log "fill-$mode: nothing to copy ($present file(s) present and unchanged, $skipped skipped)"
  else
    log "fill-$mode: copying $need file(s), $(human "$need_bytes"), $PARALLEL at a time ($present already present)"
    run_transfers "$plan" "$deadline"
  fi
  local took=$(($(date +%s) - start)) mfiles mbytes
  if [[ $mode == hot ]]; then
    mv -f -- "$missing" "$STATE_DIR/.hot-missing"
    mfiles=$(wc -l <"$STATE_DIR/.hot-missing")
    mbytes=$(awk -F '\t' '{ s += $1 } END { printf "%d", s }' "$STATE_DIR/.hot-missing")
    if ((mfiles > 0)); then
      log "MISSING from the hot set: $mfiles file(s), $(human "$mbytes") (the node registers without them):"
      while IFS=$'\t' read -r size key why; do log "  missing: $key ($(human "$size")): $why"; done <"$STATE_DIR/.hot-missing"
    fi
    if [[ -n ${FILL_STATS:-} ]]; then
      printf '%s %s %s %s %s %s\n' "$RES_OK" "$RES_OK_BYTES" "$took" "$RES_LEFT" "$mfiles" "$mbytes" >"$FILL_STATS"
    fi
  fi
  ((need > 0)) || return 0
  log "fill-$mode: copied $RES_OK file(s) ($(human "$RES_OK_BYTES")) in ${took}s, $RES_UNCHANGED unchanged, ${#RES_FAILED[@]} failed, $RES_LEFT left"
  if ((${#RES_FAILED[@]} > 0)); then
    report_failures
    die "$EX_FAILED" "fill-$mode: ${#RES_FAILED[@]} file(s) failed: ${RES_FAILED[*]}"
  fi
  if ((RES_LEFT > 0)); then
    log "fill-$mode: time budget of ${BOOT_FILL_SECONDS}s reached; $RES_LEFT file(s) ($(human "$RES_LEFT_BYTES")) left to copy in the background"
    exit "$EX_BUDGET"
  fi
}

cmd_apply() {
  require_bucket
  prepare_dirs
  compute_reserve
  export _CM_APPLY=1
  local line op key bad=0
  local -A last=()
  local -a order=()
  reject() {
    printf 'rejected\t%q\t%s\n' "$1" "$2"
    log "rejected $(printf '%q' "$1"): $2"
    bad=$((bad + 1))
  }
  # NUL cannot live in a bash string; mapping it to \001 lets check_key reject such lines instead
  # of bash silently dropping the byte and accepting a different key.
  while IFS= read -r line || [[ -n $line ]]; do
    [[ -n $line ]] || continue
    op=${line%%$'\t'*}
    key=${line#*$'\t'}
    if [[ $line != *$'\t'* || ($op != put && $op != delete) ]]; then
      reject "$line" "malformed line, expected put<TAB>key or delete<TAB>key"
    elif ! check_key "$key"; then
      reject "$key" "$KEY_PROBLEM"
    else
      [[ -n ${last[$key]:-} ]] || order+=("$key")
      last[$key]=$op
    fi
  done < <(tr '\000' '\001')

  # An SQS standard queue reorders and redelivers events, so a line may be stale: a delete for a
  # key uploaded again since, a put for one deleted since. Replaying it would remove a model the
  # bucket has, or fail (and be redelivered until the dead-letter queue) on a node that is already
  # right. So every key is brought to what the bucket holds now; the operation only names the report.
  local plan=$RUN_DIR/plan
  : >"$plan"
  for key in "${order[@]}"; do printf '%s\t%s\t%s\0' - - "$key" >>"$plan"; done
  if [[ -s $plan ]]; then
    run_transfers "$plan" 0
    for key in "${order[@]}"; do
      op=${last[$key]}
      case $op.${RES_STATUS[$key]} in
        put.ok) printf 'put\t%s\tok (%s bytes)\n' "$key" "${RES_BYTES[$key]}" ;;
        put.unchanged) printf 'put\t%s\tunchanged\n' "$key" ;;
        put.gone) printf 'put\t%s\tgone (not in bucket; removed locally)\n' "$key" ;;
        delete.gone) printf 'delete\t%s\tok\n' "$key" ;;
        delete.ok | delete.unchanged) printf 'delete\t%s\tkept (re-uploaded; now %s)\n' "$key" "${RES_WHY[$key]}" ;;
        *) printf '%s\t%s\tFAILED: %s\n' "$op" "$key" "${RES_WHY[$key]}" ;;
      esac
    done
    bad=$((bad + ${#RES_FAILED[@]}))
  fi
  if ((bad > 0)); then die "$EX_FAILED" "apply: $bad line(s) rejected or failed"; fi
  log "apply: ${#order[@]} key(s) applied"
}

cmd_status() {
  local files=0 bytes=0 staging=0 records=0 folder size
  local -A per_count=() per_bytes=()
  if [[ -d $MODELS_DIR ]]; then
    while IFS=$'\t' read -r -d '' size folder; do
      files=$((files + 1))
      bytes=$((bytes + size))
      folder=${folder%%/*}
      per_count[$folder]=$((${per_count[$folder]:-0} + 1))
      per_bytes[$folder]=$((${per_bytes[$folder]:-0} + size))
    done < <(find "$MODELS_DIR" -type f -printf '%s\t%P\0')
  fi
  if [[ -d $STAGING_DIR ]]; then staging=$(find "$STAGING_DIR" -type f -name 'part.*' | wc -l); fi
  if [[ -d $STATE_DIR ]]; then records=$(find "$STATE_DIR" -mindepth 1 -path "$STATE_DIR/.*" -prune -o -type f -print | wc -l); fi
  printf 'models_dir=%s\nfiles=%d\nbytes=%d\nsize=%s\n' "$MODELS_DIR" "$files" "$bytes" "$(human "$bytes")"
  for folder in "${!per_count[@]}"; do
    printf 'folder.%s=%d files, %s\n' "$folder" "${per_count[$folder]}" "$(human "${per_bytes[$folder]}")"
  done | sort
  printf 'state_records=%d\nstaging_in_progress=%d\n' "$records" "$staging"
  if [[ -d $MODELS_DIR ]]; then printf 'free=%s\n' "$(human "$(free_bytes)")"; fi
}

# ---- boot: what the GPU user-data runs -------------------------------------------------------

say() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  printf '%s: %s\n' "$PROG" "$*" >>"$BOOT_ROOT/dev/console" 2>/dev/null || true
  logger -t "$PROG" -- "$*" 2>/dev/null || true
}

# A node without its models must never take ComfyUI pods; Karpenter deletes a node that has not
# registered within 15 min, so keeping kubelet down bounds the cost of a broken boot.
# kubelet.service lives in /etc/systemd/system on AL2023, where `systemctl mask` cannot replace
# it, so a drop-in condition does the blocking and mask is only the fallback for other AMIs.
block_node() {
  trap - ERR
  local marker=$BOOT_ROOT/etc/comfyui-models.boot-fill-failed drop=$BOOT_ROOT/etc/systemd/system/kubelet.service.d
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

# The ComfyUI image, by digest, pulled while the models copy: kubelet then finds it present. It
# must end inside the user data (nodeadm-run restarts containerd afterwards) and never blocks the
# node. containerd's config is already written (nodeadm-config runs before cloud-init) and its
# root is on the array set up above. The snapshotter is the CRI's (nodeadm writes snapshotter =
# "soci" when FastImagePull applies, amazon-eks-ami v20260724 nodeadm/internal/containerd/
# config2.template.toml), or the image would be unpacked again; nerdctl ships in the AMI
# (templates/al2023/provisioners/install-worker.sh). Writes "result seconds snapshotter ref".
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
  # step's whole process group (the CLI under bash __aws too), and -k kills what ignores SIGTERM.
  # systemctl killed while waiting leaves the start job to systemd: only this wait ends.
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

rest_unit() {
  cat <<EOF
[Unit]
Description=Copy the rest of the ComfyUI models to local NVMe (comfyui-models)
Wants=network-online.target
After=network-online.target nodeadm-run.service
RequiresMountsFor=$DISK

[Service]
Type=oneshot
TimeoutStartSec=infinity
Nice=10
Environment=BOOT_FILL_SECONDS=0
ExecStart=-$SELF fill-hot
ExecStart=$SELF fill-rest

[Install]
WantedBy=multi-user.target
EOF
}

# The boot summary as one EMF log event to CloudWatch Logs (PutLogEvents extracts EMF without the
# CloudWatch agent, which does not run before kubelet: CloudWatch User Guide, "Using the
# PutLogEvents API to send manually-created embedded metric format logs"). A subshell without the
# ERR trap and errexit: nothing here may block the node or fail its boot, so every step is checked
# and a failure is one line naming the log group and the CLI's error. Each call is bounded, and the
# CLI's standard retry mode with 3 attempts keeps a CloudWatch outage to seconds of boot time.
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
  if ! jq -cn --argjson ts "$ts" --arg message "$doc" '[{timestamp: $ts, message: $message}]' >"$out.events" 2>"$out.err"; then
    not_sent "cannot write the log event: $(oneline "$out.err")"
    return 0
  fi
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
  local t_ud=${USERDATA_START:-$(date +%s)} t_boot t_raid t_filled=null t_image=null
  local unit=comfyui-models-rest.service rc attempt=0 deadline result=failed pull_pid
  t_boot=$(awk -v now="$(date +%s)" '{ printf "%d", now - $1 }' /proc/uptime)
  # nodeadm sets up the disks only after user data; doing it first makes nodeadm's later call a
  # no-op, since setup-local-disks skips an existing array, filesystem and mounts.
  say "setting up the NVMe instance store as RAID0 at $DISK"
  setup-local-disks raid0 || block_node "setup-local-disks raid0 failed"
  mountpoint -q "$DISK" || block_node "$DISK is not a mountpoint after setup-local-disks raid0 (no NVMe instance store on this instance type?)"
  t_raid=$(date +%s)
  require_bucket
  prepare_dirs
  rest_unit >"$BOOT_ROOT/etc/systemd/system/$unit"
  deadline=$((t_raid + BOOT_FILL_SECONDS))
  prepull "$deadline" &
  pull_pid=$!
  # One budget across attempts, so retries cannot push registration past Karpenter's timeout.
  # Exit 1 (files failed) and 3 (bucket unreachable) can be transient; 2 is configuration.
  while :; do
    attempt=$((attempt + 1))
    rc=0
    BOOT_FILL_SECONDS=$(left_until "$deadline") FILL_STATS=$RUN_DIR/fill bash "$SELF" fill-hot || rc=$?
    case $rc in
      0) result=complete t_filled=$(date +%s); break ;;
      "$EX_BUDGET") result=budget; say "boot fill budget reached; $unit finishes the copy"; break ;;
      "$EX_FAILED" | "$EX_BUCKET")
        if ((attempt < 3 && $(date +%s) + 10 < deadline)); then
          say "fill-hot failed (exit $rc), attempt $attempt of 3; retrying in 10s"
          sleep 10
          continue
        fi
        wait "$pull_pid" || true
        block_node "fill-hot failed (exit $rc) after $attempt attempt(s); see the comfyui-models lines above"
        ;;
      *) block_node "fill-hot failed (exit $rc), not retried: fix the configuration" ;;
    esac
  done
  wait "$pull_pid" || true
  local files=0 bytes=0 secs=0 left=0 mfiles=0 mbytes=0 ires isecs snap iref
  if [[ -s $RUN_DIR/fill ]]; then read -r files bytes secs left mfiles mbytes <"$RUN_DIR/fill"; fi
  if [[ $result == complete ]] && ((mfiles > 0)); then result=partial; fi
  if [[ $result == complete ]]; then say "hot models present"; fi
  read -r ires isecs snap iref <"$RUN_DIR/pull"
  if [[ $ires == present ]]; then t_image=$(date +%s); fi
  # Kubelet may label its own Node at registration with labels outside the kubernetes.io
  # namespaces (NodeRestriction); nodeadm-run reads this drop-in and merges --node-labels
  # (amazon-eks-ami v20260724 nodeadm/internal/api/merge.go, nodeadm-run.service config sources):
  # kubelet flags of all NodeConfigs are appended, not replaced, and kubelet merges the values of
  # every --node-labels, so this flag (k=v,k=v) and Karpenter's both apply.
  mkdir -p "$BOOT_ROOT/etc/eks/nodeadm.d"
  printf 'apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  kubelet:\n    flags:\n      - --node-labels=comfyui.studio/models-missing=%d,comfyui.studio/boot-at=%d\n' \
    "$mfiles" "$t_boot" >"$BOOT_ROOT/etc/eks/nodeadm.d/90-comfyui-models.yaml"
  local json
  json=$(jq -cn --arg type "${NODE_TYPE:-$INSTANCE_TYPE}" --argjson gpus "$GPUS" --argjson t_boot "$t_boot" \
    --argjson t_ud "$t_ud" --argjson t_raid "$t_raid" --argjson t_filled "$t_filled" --argjson t_image "$t_image" \
    --arg result "$result" --argjson files "$files" --argjson bytes "$bytes" --argjson secs "$secs" \
    --argjson mfiles "$mfiles" --argjson mbytes "$mbytes" --rawfile missing "$STATE_DIR/.hot-missing" \
    --arg ires "$ires" --argjson isecs "$isecs" --arg snap "$snap" --arg iref "$iref" '
    {schema: 1, instance_type: $type, gpus: $gpus, t_boot: $t_boot, t_userdata: $t_ud, t_raid: $t_raid,
     t_filled: $t_filled, t_image: $t_image,
     fill: {result: $result, files: $files, bytes: $bytes, seconds: $secs,
            mb_per_s: (if $secs > 0 then ($bytes / $secs / 100000 | floor) / 10 else null end),
            missing_files: $mfiles, missing_bytes: $mbytes,
            missing: ($missing | split("\n") | map(select(length > 0) | split("\t")[1]))},
     image: {ref: $iref, result: $ires, seconds: $isecs, snapshotter: $snap}}')
  mkdir -p "$SUMMARY_DIR"
  printf '%s\n' "$json" >"$SUMMARY_DIR/boot-summary.json"
  logger -t comfyui-boot -- "$json" 2>/dev/null || true
  say "boot: fill $result, $files file(s) $(human "$bytes") in ${secs}s$(if ((secs > 0)); then printf ' (%d MB/s)' $((bytes / secs / 1000000)); fi); missing $mfiles file(s) $(human "$mbytes"); image $ires in ${isecs}s; $(($(date +%s) - t_boot))s since kernel start"
  # Enabled, so every reboot resumes or re-checks the copy (the tool is idempotent); --no-block,
  # because the unit is ordered after nodeadm-run, which itself waits for the user data to end.
  systemctl daemon-reload
  systemctl enable "$unit"
  systemctl start --no-block "$unit"
  send_boot_metrics "$SUMMARY_DIR/boot-summary.json" || true
}

usage() {
  echo "usage: $PROG boot | fill-hot | fill-rest | apply | status  (settings: ${SETTINGS[*]})" >&2
}

main() {
  SELF=$(readlink -f -- "${BASH_SOURCE[0]}")
  local cmd=${1:-}
  load_settings
  # Internal: one xargs worker of run_transfers.
  if [[ $cmd == __transfer ]]; then
    RUN_DIR=$_CM_RUN_DIR
    transfer_one "$2"
    return 0
  fi
  # Internal: one CLI call as a command of its own, so `timeout` can bound it.
  if [[ $cmd == __aws ]]; then
    shift
    aws_cli "$@"
    return
  fi
  case $cmd in
    boot) cmd_boot ;;
    fill-hot) cmd_fill hot ;;
    fill-rest) cmd_fill rest ;;
    apply) cmd_apply ;;
    status) cmd_status ;;
    -h | --help | help) usage ;;
    *)
      usage
      die "$EX_USAGE" "unknown subcommand '${cmd}'"
      ;;
  esac
}

main "$@"
