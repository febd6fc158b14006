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
    # To a file, not a pipe: a process left behind keeps no pipe open here.
    with open(os.path.join(tmp, "output.txt"), "wb") as f:
        p = subprocess.run(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                           stdout=f, stderr=subprocess.STDOUT)
    dt = time.monotonic() - t0
    with open(os.path.join(tmp, "output.txt"), "rb") as f:
        out = f.read().decode("utf-8", "replace")
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
    """The lines regrtest printed for TEST (its last result): from its
    progress line to the next one."""
    lines = output.splitlines()
    found = ""
    for i, line in enumerate(lines):
        m = PROGRESS.search(line)
        if m and m.group(1) == test:
            j = i + 1
            while j < len(lines) and not PROGRESS.search(lines[j]):
                j += 1
            found = "\n".join(lines[i:j][:150])
    return found


# --- leftover processes ------------------------------------------------------
# A test that hangs under the allocator can leave processes behind that
# regrtest's timeout does not reach (grandchildren of a killed worker).  This
# process is a child subreaper, so they are re-parented here; after each run,
# those still alive are listed (a finding in itself) and killed by pid.

def become_subreaper():
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def children():
    me = str(os.getpid())
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[1] == me:
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            except OSError:
                cmd = ""
            out.append((int(d), fields[0], cmd))
    return out


def reap_leftovers(label):
    """Kills (SIGKILL, by pid) and reaps the children left after a run."""
    import signal
    left = []
    for _ in range(20):
        kids = children()
        if not kids:
            break
        for pid, state, cmd in kids:
            if state != "Z" or os.path.isdir("/proc/%d/task" % pid) and \
                    len(os.listdir("/proc/%d/task" % pid)) > 1:
                left.append((pid, state, cmd))
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    if left:
        print("   %s: %d process(es) left running after regrtest, killed:" % (label, len(left)))
        for pid, state, cmd in left[:10]:
            print("     pid %d (%s) %s" % (pid, state, cmd[:160]))
    return left


# --- verdict -----------------------------------------------------------------

def regressed_cases(plain_cases, pre_cases, modules=None):
    """{module: [(case, state under sigmalloc, message)]}: the cases that pass
    on the system malloc and do not pass under sigmalloc."""
    out = {}
    for name, (pstate, _) in plain_cases.items():
        mod = case_module(name)
        if pstate != "pass" or (modules is not None and mod not in modules):
            continue
        state, msg = pre_cases.get(name, ("absent", ""))
        if state != "pass":
            out.setdefault(mod, []).append((name, state, msg))
    return out


def print_regressions(reg, pre):
    for mod in sorted(reg):
        cases = sorted(reg[mod])
        states = {}
        for _, st, _ in cases:
            states[st] = states.get(st, 0) + 1
        print("   %s (%s under sigmalloc): %d case(s) passing on the system malloc do not"
              " pass: %s" % (mod, pre.get(mod, ("absent", "no result"))[1], len(cases),
                             ", ".join("%s %d" % kv for kv in sorted(states.items()))))
        shown = 0
        for name, st, msg in cases:
            if st == "absent" and shown >= 5:
                continue
            if shown >= 15:
                break
            shown += 1
            print("     %s %s" % (st.upper(), name))
            for line in [x for x in msg.splitlines() if x.strip(" -")][-6:]:
                print("        " + line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", required=True)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--jobs", type=int,
                    default=int(os.environ.get("SIGMALLOC_REGRTEST_JOBS", "2")))
    ap.add_argument("--timeout", type=int,
                    default=int(os.environ.get("SIGMALLOC_REGRTEST_TIMEOUT", "180")),
                    help="per test module, seconds")
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
    become_subreaper()

    workdir = tempfile.mkdtemp(prefix="sm-regrtest-")
    try:
        # A private copy: a rebuild of the library during the runs (ninja in
        # another shell) must not change what the workers load.
        lib = os.path.join(workdir, os.path.basename(args.lib))
        shutil.copy2(args.lib, lib)
        print("library: %s (copied to the run's directory)" % args.lib)
        args.lib = lib
        # The preload must reach the interpreter (ld.so only warns otherwise).
        chk = subprocess.run([args.python, "-c", "print(open('/proc/self/maps').read())"],
                             env=dict(os.environ, LD_PRELOAD=args.lib),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if args.lib not in chk.stdout.decode("utf-8", "replace"):
            print("FAIL: %s is not loaded by %s under LD_PRELOAD" % (args.lib, args.python))
            print(chk.stderr.decode("utf-8", "replace"))
            return 1

        plain_out, plain, plain_cases, _ = run(args, "plain", tests, workdir, False, args.jobs)
        leftovers = reap_leftovers("plain")
        pre_out, pre, pre_cases, _ = run(args, "preload", tests, workdir, True, args.jobs)
        pre_leftovers = reap_leftovers("preload")

        passing = [t for t in tests if plain.get(t, ("absent",))[0] == "pass"]
        excluded = [(t, plain[t][1] if t in plain else "no result")
                    for t in tests if t not in passing]
        bad = [t for t in passing if pre.get(t, ("absent",))[0] != "pass"]
        reg = regressed_cases(plain_cases, pre_cases)

        # One retry, alone, for plain test failures (never crashes/timeouts).
        flaky = []
        retry = sorted(t for t in set(bad) | set(reg)
                       if pre.get(t, ("absent",))[0] in ("fail", "env"))
        if retry and os.environ.get("SIGMALLOC_REGRTEST_RETRY", "1") != "0":
            print("-- first preload run, modules retried:")
            print_regressions({t: reg[t] for t in retry if t in reg}, pre)
            for t in retry:
                if t not in reg:
                    print("   %s: %s" % (t, pre[t][1]))
            r_out, r, r_cases, _ = run(args, "preload-retry", retry, workdir, True, 1)
            pre_leftovers += reap_leftovers("preload-retry")
            for t in retry:
                pre_cases = {k: v for k, v in pre_cases.items() if case_module(k) != t}
                pre_cases.update({k: v for k, v in r_cases.items() if case_module(k) == t})
                pre_out += "\n" + section(r_out, t)
                pre[t] = r.get(t, ("absent", "no result"))
            reg = regressed_cases(plain_cases, pre_cases)
            bad = [t for t in passing if pre.get(t, ("absent",))[0] != "pass"]
            flaky = [t for t in retry if t not in bad and t not in reg]

        n_plain_cases = sum(1 for s, _ in plain_cases.values() if s == "pass")
        n_reg = sum(len(v) for v in reg.values())
        print("-- modules passing on both (%d): %s" % (
            len(passing) - len(bad), " ".join(t for t in passing if t not in bad)))
        print("-- test cases passing on the system malloc: %d; not passing under sigmalloc: %d"
              % (n_plain_cases, n_reg))
        if flaky:
            print("-- FLAKY under sigmalloc, passed on retry: %s" % " ".join(flaky))
        if excluded or missing:
            print("-- excluded at module level (%d); their cases that pass on the system"
                  " malloc are still compared:" % (len(excluded) + len(missing)))
            for t, why in excluded:
                npass = sum(1 for k, (s, _) in plain_cases.items()
                            if s == "pass" and case_module(k) == t)
                print("   %s: on the system malloc: %s (%d cases pass)" % (t, why, npass))
                for name, (st, msg) in sorted(plain_cases.items()):
                    if case_module(name) == t and st in ("fail", "error"):
                        lines = [x for x in msg.splitlines() if x.strip(" -")]
                        print("     %s %s: %s" % (st.upper(), name,
                                                  (lines or [""])[-1].strip()[:150]))
            for t in missing:
                print("   %s: not installed in %s" % (t, args.python))
        only_pre = [t for t, _ in excluded if pre.get(t, ("absent",))[0] == "pass"]
        if only_pre:
            print("-- passing under sigmalloc only: %s" % " ".join(only_pre))

        failed = False
        if not passing and not n_plain_cases:
            print("FAIL: nothing passed on the system malloc; nothing compared")
            print(tail(plain_out, 60))
            return 1
        if bad or reg:
            failed = True
            print("FAIL: pass on the system malloc, not under sigmalloc:")
            for t in sorted(set(bad) - set(reg)):
                print("   %s: %s" % (t, pre.get(t, ("absent", "no result"))[1]))
            print_regressions(reg, pre)
            for t in sorted(set(bad) | set(reg)):
                s = section(pre_out, t)
                if s:
                    print("-- regrtest output for %s under sigmalloc:" % t)
                    print(s)
        if pre_leftovers and not leftovers:
            failed = True
            print("FAIL: processes left running after the sigmalloc run only (see above)")
        if failed:
            if not any(section(pre_out, t) for t in set(bad) | set(reg)):
                print("-- end of the preload run's output:")
                print(tail(pre_out, 30))
            return 1
        print("PASS: cpython-regrtest (%d modules, %d test cases pass on both)"
              % (len(passing), n_plain_cases))
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
