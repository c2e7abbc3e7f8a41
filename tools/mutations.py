"""Mutation testing with hand-made, realistic one-line bugs.

Each mutation of ``tools/mutations.toml`` (a file, an exact snippet, its replacement and
why it is a bug) is applied to a fresh copy of the working tree (tracked files and
untracked ones git does not ignore, so uncommitted work is included; the repository
itself is never touched), and the tests are run against the copy:

1. the test files mapped to the mutated source file (``SOURCE_TESTS``, or the mutation's
   own ``tests``), with ``-x``;
2. if all of them passed, the whole default suite (what ``python -m pytest`` runs),
   unless ``--quick``.

A mutation is *caught* when a test fails (or errors, or the run exceeds its wall limit:
reported as a timeout) and *survives* when every test passes. Before any mutation, the
same test runs are made on an unmutated copy (``--no-baseline`` skips this): a failure
there would make every mutation look caught, so it stops the run.

Usage (slow: every mutation runs tests; not part of CI)::

    python tools/mutations.py                      # all mutations
    python tools/mutations.py --only 'init-|sites' # ids or files matching a regex
    python tools/mutations.py --list               # check that every mutation applies
    python tools/mutations.py --jobs 2 --quick     # 2 at a time, mapped tests only

Prints the score and the survivors and writes ``tools/mutations_report.md``.
"""

import argparse
import concurrent.futures
import datetime
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    try:
        import tomli as tomllib
    except ImportError:
        raise SystemExit(
            "tools/mutations.py needs Python 3.11+ (tomllib) or `pip install tomli`."
        ) from None

ROOT = Path(__file__).resolve().parents[1]
MUTATIONS_FILE = ROOT / "tools" / "mutations.toml"
REPORT_FILE = ROOT / "tools" / "mutations_report.md"
PYTEST = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]

#: Source file -> the test files run first for its mutations (stage 1). Files not listed
#: go straight to the whole default suite.
SOURCE_TESTS = {
    "sklearn_north/growth/metrics.py": ["test_metrics", "test_triggers", "test_initializers"],
    "sklearn_north/growth/triggers.py": [
        "test_triggers",
        "test_gradients",
        "test_callback",
        "test_wiring",
    ],
    "sklearn_north/growth/initializers.py": [
        "test_initializers",
        "test_gradient_initializers",
        "test_gradients",
        "test_preactivation_wide",
        "test_sites",
        "test_wiring",
    ],
    "sklearn_north/growth/sites.py": ["test_sites", "test_initializers", "test_wiring"],
    "sklearn_north/growth/optim.py": ["test_optim", "test_wiring"],
    "sklearn_north/growth/callback.py": [
        "test_callback",
        "test_wiring",
        "test_schedules",
        "test_gate",
        "test_activations",
        "test_gradients",
    ],
    "sklearn_north/growth/gradients.py": [
        "test_gradients",
        "test_gradient_initializers",
        "test_wiring",
    ],
    "sklearn_north/growth/activations.py": ["test_activations"],
    "sklearn_north/growth/context.py": [
        "test_initializers",
        "test_preactivation_wide",
        "test_callback",
        "test_activations",
    ],
    "sklearn_north/growth/schedules.py": ["test_schedules"],
    "sklearn_north/growth/gate.py": ["test_gate"],
    "sklearn_north/growth/strategies.py": ["test_custom_strategies", "test_schedules"],
    "sklearn_north/datasets.py": ["test_datasets"],
    **{
        f"sklearn_north/{name}": [
            "test_cnn",
            "test_cnn_recording",
            "test_wrn",
            "test_conv_gradmax",
            "test_conv_gradients",
            "test_candidate_response",
        ]
        for name in ("nn/cnn.py", "nn/_conv.py", "nn/wrn.py", "growth/conv_gradients.py")
    },
    "sklearn_north/_cnn.py": ["test_cnn", "test_cnn_estimator", "test_wrn", "test_cnn_recording"],
    **{
        f"sklearn_north/{name}.py": [
            "test_estimator",
            "test_mlp_parity",
            "test_fit_safety",
            "test_parity",
            "test_sparse",
        ]
        for name in ("_base", "_mlp", "_net", "_stopping", "_interrupt")
    },
}


@dataclass
class Mutation:
    id: str
    file: str
    find: str
    replace: str
    why: str
    tests: list = field(default_factory=list)

    def test_files(self):
        # "test_x": tests/test_x.py; a path or a node id ("tests/test_x.py::test_y") as is.
        names = self.tests or SOURCE_TESTS.get(self.file, [])
        return [name if "/" in name else f"tests/{name}.py" for name in names]


@dataclass
class Outcome:
    mutation: Mutation
    status: str  # "caught", "survived", "timeout" or "error"
    stage: str = ""  # "mapped tests" or "full suite"
    detail: str = ""  # the first failing test, or what went wrong


def load_mutations(path):
    with open(path, "rb") as f:
        entries = tomllib.load(f).get("mutation", [])
    mutations = []
    for entry in entries:
        missing = {"id", "file", "find", "replace", "why"} - set(entry)
        if missing:
            raise SystemExit(f"{path}: a mutation lacks {sorted(missing)}: {entry}")
        mutations.append(Mutation(**entry))
    ids = [m.id for m in mutations]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise SystemExit(f"{path}: duplicate ids {duplicates}")
    return mutations


def mutated_source(root, mutation):
    """The mutated text of ``mutation.file`` under ``root``; ``ValueError`` unless the
    snippet occurs exactly once and the result still compiles."""
    path = Path(root) / mutation.file
    if not path.is_file():
        raise ValueError(f"{mutation.id}: {mutation.file} does not exist")
    text = path.read_text()
    count = text.count(mutation.find)
    if count != 1:
        raise ValueError(
            f"{mutation.id}: the original snippet occurs {count} times in {mutation.file} "
            f"(must be exactly once): {mutation.find!r}"
        )
    if mutation.find == mutation.replace:
        raise ValueError(f"{mutation.id}: the replacement is the original")
    new = text.replace(mutation.find, mutation.replace)
    if path.suffix == ".py":
        try:
            compile(new, str(path), "exec")
        except SyntaxError as exc:
            raise ValueError(f"{mutation.id}: the mutated file does not compile: {exc}") from exc
    return new


def working_tree_files():
    """Tracked files and untracked ones git does not ignore, that exist (relative)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return sorted({p for p in out.split("\0") if p and (ROOT / p).is_file()})


def snapshot(destination):
    """Copy the working tree's files into ``destination``."""
    for relative in working_tree_files():
        target = Path(destination) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)


def new_copy_dir(prefix):
    """An empty ``<tmp>/main`` beside a link ``<tmp>/shared`` to the repository's sibling
    ``shared`` folder (data, SPEC), so that paths relative to the repository still work."""
    parent = Path(tempfile.mkdtemp(prefix=prefix))
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (parent / "shared").symlink_to(shared, target_is_directory=True)
    copy = parent / ROOT.name
    copy.mkdir()
    return copy


def environment(copy):
    env = dict(os.environ)
    # The copy's package, not the editable install's (which points at ROOT).
    env["PYTHONPATH"] = os.pathsep.join([str(copy), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_imports_from(copy):
    code = "import sklearn_north, sys; sys.stdout.write(sklearn_north.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=copy,
        env=environment(copy),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if not Path(out).resolve().is_relative_to(Path(copy).resolve()):
        raise SystemExit(f"The tests in a copy would import sklearn_north from {out}, not {copy}.")


def run_pytest(copy, test_files, timeout):
    """Run pytest in ``copy``; return (status, detail) with status "passed", "failed",
    "timeout" or "error"."""
    process = subprocess.Popen(
        [*PYTEST, *test_files],
        cwd=copy,
        env=environment(copy),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout ends all it started
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return "timeout", f"over {timeout} s"
    if process.returncode == 0:
        return "passed", ""
    # 1: tests failed; 2: interrupted, e.g. a collection (import) error.
    if process.returncode in (1, 2):
        failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.MULTILINE)
        return "failed", failed[0] if failed else output.strip().splitlines()[-1]
    tail = " | ".join(output.strip().splitlines()[-3:])
    return "error", f"pytest exit code {process.returncode}: {tail}"


def stages(mutation, quick):
    plan = []
    if mutation.test_files():
        plan.append(("mapped tests", mutation.test_files()))
    if not quick or not plan:
        plan.append(("full suite", []))
    return plan


def run_mutation(mutation, base, quick, timeout, keep):
    copy = new_copy_dir(f"mutation-{mutation.id}-")
    try:
        shutil.copytree(base, copy, dirs_exist_ok=True)
        (copy / mutation.file).write_text(mutated_source(copy, mutation))
        for stage, files in stages(mutation, quick):
            status, detail = run_pytest(copy, files, timeout)
            if status == "failed":
                return Outcome(mutation, "caught", stage, detail)
            if status in ("timeout", "error"):
                return Outcome(mutation, status, stage, detail)
        return Outcome(mutation, "survived", stages(mutation, quick)[-1][0])
    except Exception as exc:  # the harness's own failure: reported, not counted
        return Outcome(mutation, "error", "", f"{type(exc).__name__}: {exc}")
    finally:
        if not keep:
            shutil.rmtree(copy.parent, ignore_errors=True)


def baseline(base, mutations, quick, timeout):
    """Run every distinct stage on the unmutated copy; stop if any fails."""
    runs = {tuple(files) for m in mutations for _, files in stages(m, quick)}
    for files in sorted(runs, key=len, reverse=True):
        status, detail = run_pytest(base, list(files), timeout)
        what = " ".join(files) or "the full suite"
        print(f"baseline: {what}: {status} {detail}", flush=True)
        if status != "passed":
            raise SystemExit(
                f"The unmutated tests do not pass ({what}: {status} {detail}); fix them first "
                "or every mutation would count as caught."
            )


def git_state():
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{head}{' + uncommitted changes' if dirty else ''}"


def score(outcomes):
    counted = [o for o in outcomes if o.status != "error"]
    caught = [o for o in counted if o.status in ("caught", "timeout")]
    return len(caught), len(counted)


def write_report(path, outcomes, command, quick):
    caught, counted = score(outcomes)
    percent = f"{100 * caught / counted:.1f} %" if counted else "n/a"
    lines = [
        "# Mutation testing report",
        "",
        f"Written by `tools/mutations.py` on {datetime.date.today()}, tree {git_state()}.",
        f"Command: `{command}`.",
        "",
        f"**Score: {caught} of {counted} mutations caught ({percent}).** "
        + (
            "Stage 1 only (`--quick`): the mapped test files."
            if quick
            else "Mapped test files first, then the whole default suite for the others."
        ),
        "",
    ]
    survivors = [o for o in outcomes if o.status == "survived"]
    if survivors:
        lines += ["## Survivors", ""]
        lines += [f"- `{o.mutation.id}` ({o.mutation.file}): {o.mutation.why}" for o in survivors]
        lines.append("")
    others = [o for o in outcomes if o.status in ("timeout", "error")]
    if others:
        lines += ["## Timeouts (counted as caught) and harness errors (not counted)", ""]
        lines += [f"- `{o.mutation.id}`: {o.status}: {o.detail}" for o in others]
        lines.append("")
    lines += ["## All mutations", "", "| id | file | bug | result | caught by |"]
    lines.append("|---|---|---|---|---|")
    for o in outcomes:
        by = f"{o.stage}: `{o.detail}`" if o.status == "caught" else o.detail
        cells = [f"`{o.mutation.id}`", o.mutation.file, o.mutation.why, o.status, by]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    Path(path).write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="regex: run the mutations whose id or file matches")
    parser.add_argument("--jobs", type=int, default=1, help="mutations run at a time (1)")
    parser.add_argument("--quick", action="store_true", help="mapped test files only")
    parser.add_argument(
        "--timeout", type=float, default=900, help="wall limit of one pytest run, s (900)"
    )
    parser.add_argument("--list", action="store_true", help="check and list, run nothing")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--keep", action="store_true", help="keep the mutated copies")
    parser.add_argument("--mutations", default=MUTATIONS_FILE, help="the TOML list")
    parser.add_argument("--report", default=REPORT_FILE, help="the markdown report")
    args = parser.parse_args(argv)

    mutations = load_mutations(args.mutations)
    if args.only:
        pattern = re.compile(args.only)
        mutations = [m for m in mutations if pattern.search(f"{m.id} {m.file}")]
    if not mutations:
        raise SystemExit("No mutation selected.")
    problems = []
    for m in mutations:  # every selected mutation must apply to the current tree
        try:
            mutated_source(ROOT, m)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise SystemExit("Mutations that do not apply:\n  " + "\n  ".join(problems))
    if args.list:
        for m in mutations:
            print(f"{m.id:45s} {m.file}: {m.why}")
        print(f"{len(mutations)} mutations apply.")
        return 0

    base = new_copy_dir("mutation-base-")
    try:
        snapshot(base)
        check_imports_from(base)
        if not args.no_baseline:
            baseline(base, mutations, args.quick, args.timeout)
        outcomes = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [
                pool.submit(run_mutation, m, base, args.quick, args.timeout, args.keep)
                for m in mutations
            ]
            for n, future in enumerate(concurrent.futures.as_completed(futures), 1):
                o = future.result()
                outcomes.append(o)
                progress = f"[{n}/{len(mutations)}] {o.status:8s} {o.mutation.id}"
                print(f"{progress}  {o.detail}", flush=True)
    finally:
        shutil.rmtree(base.parent, ignore_errors=True)

    order = {m.id: i for i, m in enumerate(mutations)}
    outcomes.sort(key=lambda o: order[o.mutation.id])
    caught, counted = score(outcomes)
    percent = f" ({100 * caught / counted:.1f} %)" if counted else ""
    print(f"\nScore: {caught} of {counted} caught{percent}")
    for o in outcomes:
        if o.status == "survived":
            print(f"  survived: {o.mutation.id} ({o.mutation.file}): {o.mutation.why}")
        elif o.status == "error":
            print(f"  harness error: {o.mutation.id}: {o.detail}")
    command = shlex.join(["python", "tools/mutations.py", *(argv or sys.argv[1:])])
    write_report(args.report, outcomes, command, args.quick)
    print(f"Report: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
