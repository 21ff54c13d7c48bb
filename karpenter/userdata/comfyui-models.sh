#!/usr/bin/env bash
# comfyui-models: keeps a GPU node's local copy of the models bucket on the NVMe array.
#
# Installed by the GPU user-data (gpuUserData.ts) at /usr/local/bin/comfyui-models. The boot fill,
# the comfyui-models-rest.service unit and every SSM command from the sync Lambda run it, so one
# implementation decides what "complete and current" means for a model file.
#
#   comfyui-models fill-hot    copy the hot set (HOT_SET), within BOOT_FILL_SECONDS
#   comfyui-models fill-rest   copy everything else that fits the disk
#   comfyui-models apply       read "put<TAB>key" / "delete<TAB>key" lines from stdin and bring
#                              each key to what the bucket holds now
#   comfyui-models status      print what is present
#
# Exit codes: 0 ok; 1 a transfer or apply line failed; 2 usage or configuration error; 3 bucket not
# reachable; 4 hot set does not fit the disk; 75 boot time budget reached (continue in background).
#
# Settings come from the environment, else from /etc/comfyui-models.env (COMFYUI_MODELS_ENV_FILE
# overrides the path). The environment wins so that a systemd unit or an operator can override one
# value without editing the file.
set -euo pipefail
# Files land on a hostPath that ComfyUI (not root) reads.
umask 022

readonly PROG=comfyui-models
readonly EX_FAILED=1 EX_USAGE=2 EX_BUCKET=3 EX_NOSPACE=4 EX_BUDGET=75

# Same values as karpenter/nodeContract.ts; the unit test fails if they drift apart.
readonly DEFAULT_MODELS_DIR=/mnt/k8s-disks/0/comfyui-models
readonly DEFAULT_STAGING_DIR=/mnt/k8s-disks/0/.comfyui-models-staging
readonly DEFAULT_STATE_DIR=/mnt/k8s-disks/0/.comfyui-models-state
readonly DEFAULT_MODEL_FOLDERS="audio_encoders checkpoints clip clip_vision configs controlnet diffusers diffusion_models embeddings gligen hypernetworks latent_upscale_models loras model_patches photomaker style_models text_encoders unet upscale_models vae vae_approx"

readonly SETTINGS=(MODELS_BUCKET AWS_REGION AWS_ENDPOINT_URL MODELS_DIR STAGING_DIR STATE_DIR HOT_SET
  MODEL_FOLDERS PARALLEL RETRIES BOOT_FILL_SECONDS RESERVE_GB)

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
  : "${MODELS_BUCKET:=}" "${AWS_REGION:=}" "${HOT_SET:=}"
  : "${MODELS_DIR:=$DEFAULT_MODELS_DIR}" "${STAGING_DIR:=$DEFAULT_STAGING_DIR}" "${STATE_DIR:=$DEFAULT_STATE_DIR}"
  : "${MODEL_FOLDERS:=$DEFAULT_MODEL_FOLDERS}" "${PARALLEL:=8}" "${RETRIES:=3}"
  : "${BOOT_FILL_SECONDS:=600}" "${RESERVE_GB:=20}"
  for name in PARALLEL RETRIES BOOT_FILL_SECONDS RESERVE_GB; do
    [[ ${!name} =~ ^[0-9]+$ ]] || die "$EX_USAGE" "$name must be a non-negative integer, got '${!name}'"
  done
  ((PARALLEL >= 1)) || die "$EX_USAGE" "PARALLEL must be at least 1"
  # An empty AWS_ENDPOINT_URL must not reach CLIs that read it: unset means the real S3 endpoint.
  if [[ -z ${AWS_ENDPOINT_URL:-} ]]; then unset AWS_ENDPOINT_URL; fi
  # Children (xargs workers) get the resolved values and skip the file.
  export "${SETTINGS[@]}"
  export COMFYUI_MODELS_ENV_FILE=
}

require_bucket() {
  [[ -n $MODELS_BUCKET ]] || die "$EX_USAGE" "MODELS_BUCKET is not set (environment or settings file $SETTINGS_FILE)"
  [[ -n $AWS_REGION ]] || die "$EX_USAGE" "AWS_REGION is not set"
}

# Explicit flags rather than relying on AWS_ENDPOINT_URL: CLI releases before 2.13 ignore it.
aws_cli() {
  local -a global=(--region "$AWS_REGION")
  if [[ -n ${AWS_ENDPOINT_URL:-} ]]; then global+=(--endpoint-url "$AWS_ENDPOINT_URL"); fi
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
in_hot_set() {
  local key=$1 entry
  ((${#HOT_ENTRIES[@]} > 0)) || return 0
  for entry in "${HOT_ENTRIES[@]}"; do
    if [[ $key == "$entry" || $key == "$entry"/* ]]; then
      HOT_MATCHED[$entry]=1
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
  local rec=$1 key etag size sse=
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
    usable=$(($(free_bytes) - RESERVE_GB * 1000000000))
    if ((size > usable)); then
      PROBLEM="does not fit: $(human "$size") needed, $(human "$usable") usable (RESERVE_GB=$RESERVE_GB)"
      break
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
  record failed 0 "$PROBLEM" "$key"
}

# ---- running a batch ------------------------------------------------------------------------

# $1: file of NUL-terminated transfer_one records. Sets the RES_* summary globals.
run_transfers() {
  local plan=$1 deadline=$2
  export _CM_RESULTS=$RUN_DIR/results _CM_DEADLINE=$deadline _CM_RUN_DIR=$RUN_DIR
  : >"$_CM_RESULTS"
  # Workers never fail the pipeline: every outcome is a results line, and a missing line is a failure.
  xargs -0 -r -n 1 -P "$PARALLEL" -- bash "$SELF" __transfer <"$plan" || true

  local -A seen=()
  local st bytes reason key rec
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
      *) RES_FAILED+=("$key") RES_REASON+=("$reason") ;;
    esac
  done <"$_CM_RESULTS"
  while IFS= read -r -d '' rec; do
    key=${rec#*$'\t'}
    key=${key#*$'\t'}
    if [[ -z ${seen[$key]:-} ]]; then
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
  local out=$1 err=$RUN_DIR/list.err
  # The CLI follows continuation tokens itself; Key goes last so spaces and tabs stay in it.
  if ! aws_cli s3api list-objects-v2 --bucket "$MODELS_BUCKET" \
    --query 'Contents[].[Size,ETag,Key]' --output text >"$out" 2>"$err"; then
    die "$EX_BUCKET" "bucket $MODELS_BUCKET not reachable: $(oneline "$err")"
  fi
}

cmd_fill() {
  local mode=$1 start
  start=$(date +%s)
  require_bucket
  prepare_dirs
  parse_hot_set
  if [[ $mode == rest && ${#HOT_ENTRIES[@]} -eq 0 ]]; then
    log "HOT_SET is empty, so the hot set is the whole bucket: nothing for fill-rest"
    return 0
  fi

  local listing=$RUN_DIR/listing plan=$RUN_DIR/plan
  list_bucket "$listing"
  : >"$plan"
  local size etag key present=0 outside=0 need=0 need_bytes=0 skipped=0 usable
  usable=$(($(free_bytes) - RESERVE_GB * 1000000000))
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
    if [[ $mode == rest ]] && ((need_bytes + size > usable)); then
      log "skipping $key ($(human "$size")): does not fit, $(human $((usable - need_bytes))) usable (RESERVE_GB=$RESERVE_GB)"
      skipped=$((skipped + 1))
      continue
    fi
    need=$((need + 1))
    need_bytes=$((need_bytes + size))
    printf '%s\t%s\t%s\0' "$size" "$etag" "$key" >>"$plan"
  done <"$listing"
  if ((outside > 0)); then log "ignoring $outside key(s) outside the model folders"; fi
  if [[ $mode == hot ]]; then
    for key in "${HOT_ENTRIES[@]}"; do
      [[ -n ${HOT_MATCHED[$key]:-} ]] || log "warning: HOT_SET entry '$key' matches no model in bucket $MODELS_BUCKET"
    done
  fi

  if ((need == 0)); then
    log "fill-$mode: nothing to copy ($present file(s) present and unchanged, $skipped skipped)"
    return 0
  fi
  if [[ $mode == hot ]] && ((need_bytes > usable)); then
    die "$EX_NOSPACE" "not enough disk for the hot set: $need file(s) need $(human "$need_bytes"), $MODELS_DIR has $(human $((usable + RESERVE_GB * 1000000000))) free and RESERVE_GB=$RESERVE_GB keeps $RESERVE_GB GB free ($(human "$usable") usable)"
  fi
  local deadline=0
  if [[ $mode == hot ]] && ((BOOT_FILL_SECONDS > 0)); then deadline=$((start + BOOT_FILL_SECONDS)); fi
  log "fill-$mode: copying $need file(s), $(human "$need_bytes"), $PARALLEL at a time ($present already present)"

  run_transfers "$plan" "$deadline"
  local took=$(($(date +%s) - start))
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
  if [[ -d $STATE_DIR ]]; then records=$(find "$STATE_DIR" -path "$STATE_DIR/.locks" -prune -o -type f -print | wc -l); fi
  printf 'models_dir=%s\nfiles=%d\nbytes=%d\nsize=%s\n' "$MODELS_DIR" "$files" "$bytes" "$(human "$bytes")"
  for folder in "${!per_count[@]}"; do
    printf 'folder.%s=%d files, %s\n' "$folder" "${per_count[$folder]}" "$(human "${per_bytes[$folder]}")"
  done | sort
  printf 'state_records=%d\nstaging_in_progress=%d\n' "$records" "$staging"
  if [[ -d $MODELS_DIR ]]; then printf 'free=%s\n' "$(human "$(free_bytes)")"; fi
}

usage() {
  echo "usage: $PROG fill-hot | fill-rest | apply | status  (settings: ${SETTINGS[*]})" >&2
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
  case $cmd in
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
