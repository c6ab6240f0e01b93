"""The run picture of the home page, docs/img/rollout.svg: a real rollout on the local lab, as
its terminal showed it at the end.

    python -m tests.picture

It rolls v1 of the sample app out to three lab hosts (named web1, web2 and web3 through an SSH
client config) behind each host's proxy, then v2 over it, in a pseudo-terminal. What the
terminal was sent is replayed (:class:`Screen`) to find its last screen, which rich's
``Console.save_svg`` writes out.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pexpect
from rich.console import Console
from rich.text import Text

from tests.e2e.support import release
from tests.lab import Lab, lab_lock
from tests.lab.proxy_image import ensure_proxy_image

ROOT = Path(__file__).resolve().parents[1]
PICTURE = ROOT / "docs" / "img" / "rollout.svg"
COLUMNS = 100
NAMES = ("web1", "web2", "web3")
_SEQUENCE = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\r|\n|[^\x1b\r\n]+")


class Screen:
    """The lines a terminal shows after the output rich writes: text with its colours, line
    feeds, carriage returns, lines erased and the cursor moved up (how a live view redraws)."""

    def __init__(self) -> None:
        self.lines: list[str] = [""]
        self.row = 0
        self._fresh = False  # after a carriage return: the next text starts the line anew

    def feed(self, data: str) -> None:
        for match in _SEQUENCE.finditer(data):
            token = match.group(0)
            if token == "\n":
                self.row += 1
                if self.row == len(self.lines):
                    self.lines.append("")
                self._fresh = False
            elif token == "\r":
                self._fresh = True
            elif match.group(2) == "K":
                self.lines[self.row] = ""
            elif match.group(2) == "A":
                self.row = max(0, self.row - int(match.group(1) or 1))
            elif match.group(2) in ("m", None):  # a colour, or text
                if self._fresh:
                    self.lines[self.row] = ""
                    self._fresh = False
                self.lines[self.row] += token

    def text(self) -> list[Text]:
        """The lines, with their colours, trailing empty lines left out."""
        lines = list(self.lines)
        while lines and not Text.from_ansi(lines[-1]).plain.strip():
            lines.pop()
        return [Text.from_ansi(line) for line in lines]


def run_on_terminal(lab: Lab, inventory: Path, *args: str) -> Screen:
    """`deploy ARGS` in a pseudo-terminal of COLUMNS columns; the screen it leaves."""
    env = {**os.environ, **lab.env(), "DEPLOY_INVENTORY": str(inventory), "PYTHONPATH": str(ROOT),
           "TERM": "xterm-256color"}
    for name in ("NO_COLOR", "COLUMNS", "LINES"):
        env.pop(name, None)
    child = pexpect.spawn(sys.executable, ["-m", "deployer", *args], cwd=str(lab.app_repo), env=env,
                          dimensions=(40, COLUMNS), encoding="utf-8", timeout=300)
    child.expect(pexpect.EOF)
    child.close()
    if child.exitstatus != 0:
        sys.exit(f"deploy {' '.join(args)} failed:\n{child.before}")
    screen = Screen()
    screen.feed(str(child.before))
    return screen


def main() -> None:
    with lab_lock():
        lab = Lab.up()
        lab.reset()
        ssh_config = lab.state_dir / "picture-ssh-config"
        ssh_config.write_text("".join(f"Host {name}\n  HostName {host.address}\n"
                                      for name, host in zip(NAMES, lab.hosts, strict=False)))
        proxy = {"hosts": ["web.lab.test"], "app_port": 8080, "image": ensure_proxy_image(lab),
                 "drain_timeout": 2}
        inventory = lab.write_inventory(lab.state_dir / "picture-inventory.yaml", hosts={"web": list(NAMES)},
                                        app_overrides={"container": {"ports": []}, "proxy": proxy},
                                        ssh={"config_file": str(ssh_config)})
        env = {"DEPLOY_INVENTORY": str(inventory)}
        release(lab, env=env)
        run_on_terminal(lab, inventory, "rollout", "--hosts", "web")
        lab.commit_app("v2")
        release(lab, env=env)
        screen = run_on_terminal(lab, inventory, "rollout", "--hosts", "web")
    console = Console(record=True, width=COLUMNS, file=open(os.devnull, "w"), force_terminal=True,  # noqa: SIM115
                      color_system="truecolor")
    console.print(Text("$ deploy rollout --hosts web", style="bold"))
    for line in screen.text():
        # a line longer than the terminal folds at its last column, as it did there
        for part in line.divide(range(COLUMNS, len(line), COLUMNS)):
            console.print(part, no_wrap=True)
    console.save_svg(str(PICTURE), title="deploy rollout --hosts web")
    print(f"wrote {PICTURE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
