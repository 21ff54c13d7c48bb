"""Runs user data through cloud-init's own user-data processing, as cloud-final would on a node.

Usage: /usr/bin/python3 cloudinit_userdata.py USER_DATA_FILE WORK_DIR
Prints a JSON object: the shell scripts cloud-init wrote (name -> hex of the bytes) and the errors
its part handlers logged (run_part catches and logs a handler's exception; the script is then missing).
Needs Debian's cloud-init modules (/usr/bin/python3), not another interpreter.
"""
import json
import logging
import os
import sys

from cloudinit import handlers, helpers
from cloudinit.handlers.shell_script import ShellScriptPartHandler
from cloudinit.settings import PER_INSTANCE
from cloudinit.user_data import UserDataProcessor


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.errors = []

    def emit(self, record):
        self.errors.append(self.format(record))


def main(user_data_file, work):
    collect = Collect()
    collect.setFormatter(logging.Formatter("%(message)s\n%(exc_text)s"))
    logging.getLogger("cloudinit").addHandler(collect)
    paths = helpers.Paths({"cloud_dir": os.path.join(work, "cloud"), "run_dir": os.path.join(work, "run")})
    with open(user_data_file, "rb") as f:
        blob = f.read()
    # What stages.Init does with the instance's user data: process (includes, MIME), then walk
    # the parts with the registered handlers (stages.Init._do_handlers).
    message = UserDataProcessor(paths).process(blob)
    shell = ShellScriptPartHandler(paths)
    data = {
        "handlers": {ctype: shell for ctype in shell.list_types()},
        "handlerdir": os.path.join(work, "handlers"),
        "handlercount": 0,
        "excluded": [],
        "data": None,
        "frequency": PER_INSTANCE,
    }
    handlers.walk(message, handlers.walker_callback, data=data)
    scripts_dir = paths.get_ipath_cur("scripts")
    scripts = {}
    if os.path.isdir(scripts_dir):
        for name in sorted(os.listdir(scripts_dir)):
            with open(os.path.join(scripts_dir, name), "rb") as f:
                scripts[name] = f.read().hex()
    print(json.dumps({"scripts": scripts, "errors": collect.errors}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
