"""CPython's regression suite, system malloc vs sigmalloc (the `cpython` suite).

    python3 regrtest.py --python PYTHON --lib LIBPATH [--jobs N] [--timeout S] [TEST...]

Started by run-regrtest.sh, which chooses PYTHON (an interpreter that has the
`test` package).  Runs `PYTHON -m test -jN --timeout S --junit-xml ...` on the
slice below (or the TESTs given) with PYTHONMALLOC=malloc, so that every
Python object comes from malloc, twice, each in a fresh temporary directory:

  1. plain: on the system (glibc) malloc;
  2. preload: with LD_PRELOAD=LIBPATH (inherited by regrtest's worker
     processes and by every subprocess the tests start).

A module's result is read from regrtest's progress lines
("[ 3/19] test_set passed"), its test cases from the JUnit XML.

Verdict: the modules that pass on the system malloc must all pass under
sigmalloc.  Modules that fail, crash or are skipped on the system malloc, or
that the interpreter does not have, are excluded and listed.  A module that
passes plain but fails under sigmalloc with plain test failures ("failed",
"failed (env changed)") is run once more under sigmalloc, alone (-j1): the
slice has timing-sensitive tests (test_signal, test_threading) and the
programs suites run in parallel with the others.  When it passes then, it is
reported as FLAKY and does not fail the test; SIGMALLOC_REGRTEST_RETRY=0
turns the retry off.  A crash, a timeout or a worker that died is never
retried.  The report also lists, per module, the test cases that failed under
sigmalloc (with the first lines of their tracebacks) and the cases that passed
plain but were skipped under sigmalloc.

Exit status: 0 pass, 1 fail.  stdout is the report.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

# The slice; a tuple is alternatives, the first one the interpreter has wins
# (test_unicode became test_str in 3.13).
TESTS = [
    "test_dict", "test_list", "test_set", "test_json", "test_re", "test_signal",
    "test_gc", "test_weakref", ("test_unicode", "test_str"), "test_bytes",
    "test_deque", "test_heapq", "test_sort", "test_sqlite3", "test_pickle",
    "test_collections", "test_itertools", "test_functools", "test_threading",
]


def resolve(tests):
    """Names of the slice for the running interpreter."""
    import importlib.util
    out = []
    for t in tests:
        if isinstance(t, tuple):
            have = [a for a in t if importlib.util.find_spec("test." + a)]
            t = have[0] if have else t[0]
        out.append(t)
    return out


def have_module(test):
    import importlib.util
    try:
        return importlib.util.find_spec("test." + test) is not None
    except ImportError:
        return False


# "0:00:24 load avg: 4.72 [14/19/1] test_pickle passed (3.1 sec) -- running: ..."
PROGRESS = re.compile(r"\[\s*\d+/\d+(?:/\d+)?\] (test_[A-Za-z0-9_.]+) (.*)$")


def classify(text):
    """pass | skip | env | fail | timeout | crash, from a progress line's text."""
    text = text.split(" -- ")[0].strip()
    if text.startswith("passed"):
        return "pass"
    if text.startswith(("skipped", "ran no tests", "run no tests", "resource denied")):
        return "skip"
    if text.startswith("failed (env changed)"):
        return "env"
    if text.startswith(("failed (uncaught exception)", "failed (reference leak)")):
        return "crash"
    if text.startswith("failed"):
        return "fail"
    if text.startswith("timed out"):
        return "timeout"
    # crashed, worker non-zero exit code, worker bug, interrupted, ...
    return "crash"


def module_results(output):
    res = {}
    for line in output.splitlines():
        m = PROGRESS.search(line)
        if m:
            res[m.group(1)] = (classify(m.group(2)), m.group(2).split(" -- ")[0].strip())
    return res


def case_results(xml_path):
    """{case name: (pass|skip|fail|error, message)} from regrtest's JUnit XML."""
    cases = {}
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError):
        return cases
    for tc in root.iter("testcase"):
        name = tc.get("name", "?")
        state, msg = "pass", ""
        for child in tc:
            if child.tag in ("failure", "error"):
                state, msg = child.tag if child.tag == "error" else "fail", (child.text or "")
                break
            if child.tag == "skipped":
                state, msg = "skip", (child.text or "")
        cases[name] = (state, msg)
    return cases


def case_module(name):
    # "test.test_json.test_decode.TestCDecode.test_x" -> "test_json"
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "test" else parts[0]


def run(args, label, tests, workdir, preload, jobs):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTHON") and k not in ("LD_PRELOAD", "MALLOC_CHECK_",
                                                        "MALLOC_PERTURB_", "SIGMALLOC_VERBOSE")}
    env.update(PYTHONMALLOC="malloc", PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1",
               LC_ALL="C.UTF-8", LANG="C.UTF-8", TZ="UTC")
    tmp = os.path.join(workdir, label)
    os.makedirs(os.path.join(tmp, "tmp"))
    env["TMPDIR"] = os.path.join(tmp, "tmp")
    env["HOME"] = tmp
    if preload:
        env["LD_PRELOAD"] = args.lib
    xml = os.path.join(tmp, "junit.xml")
    cmd = [args.python, "-m", "test", "-j%d" % jobs, "--timeout", str(args.timeout),
           "--junit-xml", xml] + tests
    print("== %s: %s%s" % (label, "LD_PRELOAD=%s " % args.lib if preload else "",
                            " ".join(cmd[:7] + ["..."])), flush=True)
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    dt = time.monotonic() - t0
    out = p.stdout.decode("utf-8", "replace")
    with open(os.path.join(tmp, "output.txt"), "w") as f:
        f.write(out)
    mods = module_results(out)
    cases = case_results(xml)
    counts = {}
    for state, _ in mods.values():
        counts[state] = counts.get(state, 0) + 1
    print("   exit %d, %.1f s, modules: %s, cases: %d"
          % (p.returncode, dt, ", ".join("%s %d" % kv for kv in sorted(counts.items())),
             len(cases)), flush=True)
    return out, mods, cases, p.returncode


def tail(text, n):
    lines = text.splitlines()
    return "\n".join(lines[-n:])


def section(output, test):
    """The lines regrtest printed for TEST: from its progress line to the next one."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        m = PROGRESS.search(line)
        if m and m.group(1) == test:
            j = i + 1
            while j < len(lines) and not PROGRESS.search(lines[j]):
                j += 1
            return "\n".join(lines[i:j][:150])
    return ""


def report_cases(plain_cases, pre_cases, mods):
    """Case-level lines for MODS: failures under sigmalloc, pass->skip changes."""
    for name in sorted(pre_cases):
        if case_module(name) not in mods:
            continue
        state, msg = pre_cases[name]
        pstate = plain_cases.get(name, ("absent", ""))[0]
        if state in ("fail", "error"):
            print("   %s %s (plain: %s)" % (state.upper(), name, pstate))
            for line in msg.strip().splitlines()[-6:]:
                print("      " + line)
        elif state == "skip" and pstate == "pass":
            print("   SKIPPED under sigmalloc only: %s: %s" % (name, msg.strip()[:120]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", required=True)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("SIGMALLOC_REGRTEST_JOBS", "2")))
    ap.add_argument("--timeout", type=int, default=240, help="per test module, seconds")
    ap.add_argument("tests", nargs="*")
    args = ap.parse_args()

    wanted = args.tests or resolve(TESTS)
    missing = [t for t in wanted if not have_module(t)]
    tests = [t for t in wanted if t not in missing]
    print("python: %s (%s)" % (args.python, sys.version.split()[0]))
    print("slice: %d modules%s" % (len(tests), "; not installed: " + " ".join(missing)
                                   if missing else ""))
    if not tests:
        print("FAIL: no module of the slice is installed")
        return 1

    workdir = tempfile.mkdtemp(prefix="sm-regrtest-")
    try:
        # The preload must reach the interpreter (ld.so only warns otherwise).
        chk = subprocess.run([args.python, "-c", "print(open('/proc/self/maps').read())"],
                             env=dict(os.environ, LD_PRELOAD=args.lib),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if args.lib not in chk.stdout.decode("utf-8", "replace"):
            print("FAIL: %s is not loaded by %s under LD_PRELOAD" % (args.lib, args.python))
            print(chk.stderr.decode("utf-8", "replace"))
            return 1

        plain_out, plain, plain_cases, _ = run(args, "plain", tests, workdir, False, args.jobs)
        pre_out, pre, pre_cases, _ = run(args, "preload", tests, workdir, True, args.jobs)

        passing = [t for t in tests if plain.get(t, ("absent",))[0] == "pass"]
        excluded = [(t, plain[t][1] if t in plain else "no result")
                    for t in tests if t not in passing]
        bad = [t for t in passing if pre.get(t, ("absent",))[0] != "pass"]

        flaky = []
        retry = [t for t in bad if pre[t][0] in ("fail", "env")] if bad else []
        if retry and os.environ.get("SIGMALLOC_REGRTEST_RETRY", "1") != "0":
            print("-- first preload results of the modules retried:")
            for t in retry:
                print("   %s: %s" % (t, pre[t][1]))
            report_cases(plain_cases, pre_cases, set(retry))
            r_out, r, r_cases, _ = run(args, "preload-retry", retry, workdir, True, 1)
            for t in retry:
                if r.get(t, ("absent",))[0] == "pass":
                    flaky.append(t)
                    bad.remove(t)
                else:
                    pre[t] = r.get(t, ("absent", "no result"))
                    pre_out += "\n" + r_out
                    pre_cases.update({k: v for k, v in r_cases.items() if case_module(k) == t})

        print("-- passing on both (%d): %s" % (len(passing) - len(bad), " ".join(
            t for t in passing if t not in bad)))
        if flaky:
            print("-- FLAKY under sigmalloc, passed on retry: %s" % " ".join(flaky))
        if excluded or missing:
            print("-- excluded (%d):" % (len(excluded) + len(missing)))
            for t, why in excluded:
                print("   %s: on the system malloc: %s" % (t, why))
            for t in missing:
                print("   %s: not installed in %s" % (t, args.python))
        only_pre = [t for t, _ in excluded if pre.get(t, ("absent",))[0] == "pass"]
        if only_pre:
            print("-- passing under sigmalloc only: %s" % " ".join(only_pre))
        report_cases(plain_cases, pre_cases, set(passing) - set(bad) - set(flaky))

        if not passing:
            print("FAIL: no module passed on the system malloc; nothing compared")
            print(tail(plain_out, 60))
            return 1
        if bad:
            print("FAIL: pass on the system malloc, not under sigmalloc:")
            for t in bad:
                print("   %s: %s" % (t, pre.get(t, ("absent", "no result"))[1]))
            report_cases(plain_cases, pre_cases, set(bad))
            for t in bad:
                s = section(pre_out, t)
                if s:
                    print("-- regrtest output for %s under sigmalloc:" % t)
                    print(s)
            print("-- end of the preload run's output:")
            print(tail(pre_out, 40))
            return 1
        print("PASS: cpython-regrtest (%d modules pass on both)" % len(passing))
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
