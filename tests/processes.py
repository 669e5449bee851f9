"""Processes of one local Ray cluster, found from the process that started it (other
clusters on the machine have processes of the same names), and their memory."""

from pathlib import Path


def descendants(root: int) -> list[int]:
    """Every process below `root` (its Ray cluster's gcs, raylet and workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def title(pid: int) -> str:
    """The process title (Ray names its workers `ray::<actor>`)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def find(root: int, prefixes: dict[str, str]) -> dict[str, int]:
    """{name: pid} of the processes below `root` whose title starts with prefixes[name]."""
    titles = {pid: title(pid) for pid in descendants(root)}
    return {name: pid for pid, text in titles.items() for name, prefix in prefixes.items() if text.startswith(prefix)}


def rss(pid: int) -> int:
    """Resident memory in bytes (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
