#!/usr/bin/env python3
"""Copy ComfyUI's finished outputs from a local scratch folder to the Mountpoint-mounted outputs bucket.

Why this sidecar exists: Mountpoint for Amazon S3 only accepts *new* files written
sequentially, once. It rejects seek-back writes (ffmpeg rewrites the MP4 header at
the end of an encode), appends, renames, and overwrites (unless the mount has
allow-overwrite, and even then only with O_TRUNC). ComfyUI does all of those in its
output folder, so ComfyUI writes to a local emptyDir and this process, which only
ever creates new files in one sequential pass, carries each finished file to S3.

Runs with the ComfyUI image's python3 (>= 3.9), standard library only.

Exit codes: 0 normal end (SIGTERM/SIGINT, or --once with every file uploaded);
1 --once finished but some file failed; 2 bad usage (missing --source/--dest).
"""

import argparse
import json
import os
import signal
import sys
import threading
import time

STATE_NAME = ".uploader-state.json"
# Names ComfyUI, ffmpeg and friends use while a file is still being produced.
TEMP_SUFFIXES = (".tmp", ".part", ".partial")
CHUNK = 8 * 1024 * 1024
GIB = 1024 ** 3
# On shutdown there is no time to wait for --settle-seconds: a file is taken as
# finished when it does not change over this short check.
FLUSH_CHECK_SECONDS = 1.0


def log(msg):
    print(msg, flush=True)


def err(msg):
    print("uploader: " + msg, file=sys.stderr, flush=True)


def skipped_name(name):
    return name.startswith(".") or name.lower().endswith(TEMP_SUFFIXES)


def versioned(rel, n):
    # Mountpoint will not overwrite the first upload, so a later edit of the same
    # output goes to a sibling name: img.png -> img.v2.png, img.v3.png, ...
    stem, ext = os.path.splitext(rel)
    return "%s.v%d%s" % (stem, n, ext)


class Uploader:
    def __init__(self, source, dest, settle, interval, keep_hours, max_scratch_gb):
        self.source = source
        self.dest = dest
        self.settle = settle
        self.interval = interval
        self.keep_seconds = keep_hours * 3600.0
        self.max_scratch_bytes = None if max_scratch_gb is None else int(max_scratch_gb * GIB)
        self.state_path = os.path.join(source, STATE_NAME)
        # relpath -> {"size", "mtime_ns", "uploaded_at", "dest", "version", ["pruned_at"]}
        # Entries are kept after the local copy is pruned: ComfyUI restarts its file
        # counter when the folder empties, and a reused name must then become a new
        # version rather than be mistaken for the already uploaded file.
        self.files = {}
        # relpath -> ((size, mtime_ns), first time seen with that signature)
        self.observed = {}
        self.stop = threading.Event()
        self.stop_reason = "SIGTERM"
        self.over_limit_logged = False
        self.load_state()

    # ---- state ---------------------------------------------------------------

    def load_state(self):
        try:
            with open(self.state_path, "r", encoding="utf-8") as f:
                data = json.load(f)
            files = data.get("files", {})
            if isinstance(files, dict):
                self.files = files
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as e:
            # Not fatal: files already at --dest with the same size are recognised
            # again, so losing the state costs no duplicate uploads of unchanged files.
            err("ignoring unreadable state file %s: %s" % (self.state_path, e))

    def save_state(self):
        # --source is a normal local filesystem, so temp + os.replace is atomic here
        # (it would not be on --dest: Mountpoint has no rename).
        tmp = self.state_path + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"version": 1, "files": self.files}, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_path)
        except OSError as e:
            err("cannot write state file %s: %s" % (self.state_path, e))

    @staticmethod
    def entry_sig(e):
        # mtime_ns is stored as a string: as a JSON number it exceeds 2**53 and is
        # silently rounded by jq/JavaScript, which would look like an edit.
        return (e.get("size"), int(e.get("mtime_ns", -1)))

    def is_uploaded(self, rel, sig):
        e = self.files.get(rel)
        return e is not None and self.entry_sig(e) == sig

    # ---- scanning --------------------------------------------------------------

    def walk(self):
        """Yield (relpath, stat) of every regular, non-hidden, non-temp file under --source."""
        for root, dirs, names in os.walk(self.source):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if skipped_name(name):
                    continue
                path = os.path.join(root, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue  # vanished between listing and stat
                if not (st.st_mode & 0o170000 == 0o100000):  # regular files only, no symlinks
                    continue
                rel = os.path.relpath(path, self.source).replace(os.sep, "/")
                yield rel, st

    # ---- upload ----------------------------------------------------------------

    def copy_new(self, src_path, dst_path):
        """Create dst_path and fill it from src_path in one sequential pass; return bytes written."""
        parent = os.path.dirname(dst_path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        # O_EXCL: a new file or nothing. Mountpoint cannot overwrite or truncate an
        # uploaded object, and on any other filesystem this guarantees that an earlier
        # upload is never clobbered. Raw fd writes: no buffering layer, no seeks.
        fd = os.open(dst_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        written = 0
        try:
            with open(src_path, "rb") as src:
                while True:
                    chunk = src.read(CHUNK)
                    if not chunk:
                        break
                    view = memoryview(chunk)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                        written += n
            # Mountpoint uploads on fsync/close, and only fsync reliably reports a
            # failed upload (close errors are easily lost), so fsync before close.
            os.fsync(fd)
        finally:
            os.close(fd)
        return written

    def upload(self, rel, sig):
        """Upload one settled file; return True on success (or when already at --dest)."""
        size = sig[0]
        src_path = os.path.join(self.source, rel)
        entry = self.files.get(rel)
        if entry is None:
            n = 1
        else:
            # Changed after it was uploaded (edited in place, or a reused name after
            # pruning): the earlier object stays as it is, the new content is a new version.
            n = max(2, int(entry.get("version", 1)) + 1)
        try:
            while True:
                dest_rel = rel if n == 1 else versioned(rel, n)
                dst_path = os.path.join(self.dest, dest_rel)
                try:
                    dst_size = os.stat(dst_path).st_size
                except FileNotFoundError:
                    break
                if dst_size == size:
                    # Uploaded before the state file recorded it (restart, lost state).
                    log("already at dest %s %d" % (dest_rel, size))
                    self.record(rel, sig, dest_rel, n)
                    return True
                n += 1  # a different file holds this name at --dest; never overwrite it
            if n > 1:
                why = "changed after upload" if entry is not None else "a different file has this name at dest"
                log("%s: %s; uploading as %s (Mountpoint cannot overwrite)" % (rel, why, dest_rel))
            written = self.copy_new(src_path, dst_path)
        except OSError as e:
            # EIO/ENOSPC/... from Mountpoint or S3: keep the file pending, retry next poll.
            err("upload of %s failed (will retry): %s" % (rel, e))
            return False
        log("uploaded %s %d" % (dest_rel, written))
        self.record(rel, sig, dest_rel, n)
        return True

    def record(self, rel, sig, dest_rel, n):
        self.files[rel] = {
            "size": sig[0],
            "mtime_ns": str(sig[1]),
            "uploaded_at": time.time(),
            "dest": dest_rel,
            "version": n,
        }
        self.observed.pop(rel, None)
        self.save_state()

    # ---- polling ---------------------------------------------------------------

    def poll(self):
        now = time.monotonic()
        seen = set()
        for rel, st in self.walk():
            if self.stop.is_set():
                return  # shutdown: go straight to the flush
            sig = (st.st_size, st.st_mtime_ns)
            seen.add(rel)
            if self.is_uploaded(rel, sig):
                continue
            obs = self.observed.get(rel)
            if obs is None or obs[0] != sig:
                self.observed[rel] = (sig, now)
            elif now - obs[1] >= self.settle:
                self.upload(rel, sig)  # on failure it stays observed and is retried next poll
        for rel in list(self.observed):
            if rel not in seen:
                del self.observed[rel]

    def flush(self, reason):
        """Upload everything pending whose size/mtime hold still over a short check."""
        pending = {}
        for rel, st in self.walk():
            sig = (st.st_size, st.st_mtime_ns)
            if not self.is_uploaded(rel, sig):
                pending[rel] = sig
        if pending:
            time.sleep(FLUSH_CHECK_SECONDS)
        flushed, failed, unstable = [], [], []
        for rel, sig in sorted(pending.items()):
            try:
                st = os.lstat(os.path.join(self.source, rel))
            except OSError:
                continue  # deleted meanwhile: nothing to save
            if (st.st_size, st.st_mtime_ns) != sig:
                unstable.append(rel)
                continue
            # No later poll will retry, so give a failing upload one more chance now.
            if self.upload(rel, sig) or self.upload(rel, sig):
                flushed.append(rel)
            else:
                failed.append(rel)
        log("%s: flushed %d file(s)%s" % (reason, len(flushed), (": " + " ".join(flushed)) if flushed else ""))
        if unstable:
            err("%s: not flushed, still being written: %s" % (reason, " ".join(unstable)))
        if failed:
            err("%s: not flushed, upload failed: %s" % (reason, " ".join(failed)))
        return not failed

    # ---- pruning ---------------------------------------------------------------

    def prune(self):
        """Delete local copies already in S3. Never touches --dest, never a file not uploaded."""
        now = time.time()
        local = {}  # rel -> size, of every file counted against --max-scratch-gb
        for root, _dirs, names in os.walk(self.source):
            for name in names:
                path = os.path.join(root, name)
                if path in (self.state_path, self.state_path + ".tmp"):
                    continue
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                rel = os.path.relpath(path, self.source).replace(os.sep, "/")
                local[rel] = (st.st_size, st.st_mtime_ns)

        # Only files whose local content is exactly what was uploaded are candidates.
        prunable = sorted(
            (e.get("uploaded_at", 0), rel)
            for rel, e in self.files.items()
            if "pruned_at" not in e and local.get(rel) == self.entry_sig(e)
        )
        changed = False
        total = sum(sig[0] for sig in local.values())
        for uploaded_at, rel in prunable:
            too_old = now - uploaded_at > self.keep_seconds
            over = self.max_scratch_bytes is not None and total > self.max_scratch_bytes
            if not (too_old or over):
                continue
            try:
                os.remove(os.path.join(self.source, rel))
            except FileNotFoundError:
                pass
            except OSError as e:
                err("cannot prune %s: %s" % (rel, e))
                continue
            total -= local[rel][0]
            self.files[rel]["pruned_at"] = now
            changed = True
            log("pruned %s (%s)" % (rel, "older than --keep-hours" if too_old else "scratch over --max-scratch-gb"))
        if changed:
            self.save_state()
        if self.max_scratch_bytes is not None:
            over = total > self.max_scratch_bytes
            if over and not self.over_limit_logged:
                err("scratch holds %d bytes, over --max-scratch-gb, and nothing uploaded is left to prune" % total)
            self.over_limit_logged = over

    # ---- main loops --------------------------------------------------------------

    def safe(self, fn, *args):
        # One bad file or a flaky mount must not end the sidecar: log and carry on.
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001
            err("%s failed (continuing): %r" % (fn.__name__, e))
            return None

    def run_once(self):
        ok = self.flush("once")
        self.safe(self.prune)
        return 0 if ok else 1

    def run_loop(self):
        while not self.stop.is_set():
            self.safe(self.poll)
            if not self.stop.is_set():
                self.safe(self.prune)
            self.stop.wait(self.interval)
        # Pod shutdown (scale-in, spot interruption): the emptyDir dies with the pod,
        # so anything not carried to S3 now is lost. Don't wait for --settle-seconds.
        self.safe(self.flush, self.stop_reason)
        return 0


def parse_args(argv):
    p = argparse.ArgumentParser(description="Copy finished files from a scratch folder to a Mountpoint for S3 folder.")
    p.add_argument("--source", required=True, help="folder ComfyUI writes outputs to (local emptyDir)")
    p.add_argument("--dest", required=True, help="Mountpoint-mounted outputs folder")
    p.add_argument("--settle-seconds", type=float, default=10.0,
                   help="a file is finished once its size and mtime hold still this long (default 10)")
    p.add_argument("--interval-seconds", type=float, default=5.0, help="poll interval (default 5)")
    p.add_argument("--keep-hours", type=float, default=24.0,
                   help="delete local copies uploaded longer ago than this (default 24)")
    p.add_argument("--max-scratch-gb", type=float, default=None,
                   help="when the source folder is over this many GiB, delete oldest uploaded copies first")
    p.add_argument("--once", action="store_true", help="flush everything pending once, prune, and exit")
    args = p.parse_args(argv)
    for flag in ("source", "dest"):
        path = getattr(args, flag)
        if not os.path.isdir(path):
            p.exit(2, "uploader: --%s %s does not exist or is not a directory\n" % (flag, path))
    if args.settle_seconds < 0 or args.interval_seconds <= 0 or args.keep_hours < 0 or (
            args.max_scratch_gb is not None and args.max_scratch_gb < 0):
        p.exit(2, "uploader: --settle-seconds/--keep-hours/--max-scratch-gb must be >= 0, --interval-seconds > 0\n")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    up = Uploader(os.path.abspath(args.source), os.path.abspath(args.dest), args.settle_seconds,
                  args.interval_seconds, args.keep_hours, args.max_scratch_gb)

    def on_signal(signum, _frame):
        up.stop_reason = signal.Signals(signum).name
        up.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log("uploader: watching %s -> %s%s" % (up.source, up.dest, " (once)" if args.once else ""))
    return up.run_once() if args.once else up.run_loop()


if __name__ == "__main__":
    sys.exit(main())
