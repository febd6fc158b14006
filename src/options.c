/*
 * Options, read once from SIGMALLOC_* environment variables at global
 * initialisation (depth 1, under the init lock).
 *
 * No getenv (it is not safe this early in every program and takes no
 * lock we could order): `environ` is read by hand, as mimalloc does.
 * Values: decimal with an optional K, M or G suffix; booleans accept
 * 1/0, on/off, yes/no, true/false, in any case. A bad value is reported
 * with one line on stderr and the default is kept.
 */
#include "internal.h"

extern char **environ;

struct sm_options _sm_options = {
	.reserve = 4,
	.cap_bytes = 128 * 1024,
	.idle_ms = 1000,
	.decay_ms = 1000,
	.arena_after = 64 * 1024,
	.pool_bytes = 128 * 1024,
	.refill_thread = 2,
	.stats_at_exit = false,
	.verbose = false,
	.near = true,
	.signal_warm = true,
};

enum option_kind { OPT_U32, OPT_BOOL, OPT_AUTO };
struct option_desc {
	const char *name; /* after the SIGMALLOC_ prefix */
	enum option_kind kind;
	void *value;
	uint32_t min, max;
	const char *what;
};

static const struct option_desc options[] = {
	{ "RESERVE", OPT_U32, &_sm_options.reserve, 0, 1024,
	  "objects per used class kept for nested (signal handler) allocations" },
	{ "BUCKET_MAX", OPT_U32, &_sm_options.cap_bytes, 4096, 64u << 20,
	  "bytes one bucket may grow to by slow start" },
	{ "IDLE_MS", OPT_U32, &_sm_options.idle_ms, 100, 3600000,
	  "quiet time after which a thread's cache is trimmed to its low watermarks" },
	{ "DECAY_MS", OPT_U32, &_sm_options.decay_ms, 0, 3600000,
	  "jemalloc dirty_decay_ms of sigmalloc's arenas (unused pages kept this long)" },
	{ "ARENA_AFTER", OPT_U32, &_sm_options.arena_after, 0, 1u << 30,
	  "bytes a size class may waste by drawing larger objects from its hub class before it "
	  "gets a jemalloc arena of its own (0: every class its own arena at once)" },
	{ "POOL", OPT_U32, &_sm_options.pool_bytes, 0, 64u << 20,
	  "bytes at the start of each class's address range that sigmalloc carves itself before "
	  "the class gets a jemalloc arena (0: none; rounded up to pages)" },
	{ "REFILL_THREAD", OPT_AUTO, &_sm_options.refill_thread, 0, 2,
	  "background refill thread: 0 off, 1 on from the start, 2 auto (on first need)" },
	{ "STATS", OPT_BOOL, &_sm_options.stats_at_exit, 0, 1,
	  "print the per-class statistics table to stderr at exit" },
	{ "VERBOSE", OPT_BOOL, &_sm_options.verbose, 0, 1, "print every option at start-up" },
	{ "NEAR", OPT_BOOL, &_sm_options.near, 0, 1,
	  "copy the malloc/free hit paths near the main program and point its PLT slots there "
	  "(preload/near.c)" },
	{ "SIGNAL_WARM", OPT_BOOL, &_sm_options.signal_warm, 0, 1,
	  "enter signal handlers installed with sigaction, signal or glibc's other installers "
	  "through a stub that prefetches sigmalloc's hit paths and the thread's state "
	  "(preload/signal_warm.c)" },
};

static char lower(char ch)
{
	return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
}

static bool str_ieq(const char *a, const char *b)
{
	while (*a && lower(*a) == lower(*b))
		a++, b++;
	return *a == '\0' && *b == '\0';
}

/* The value of NAME in environ, or NULL. */
static const char *env_lookup(const char *name)
{
	if (!environ)
		return NULL;
	for (char **e = environ; *e; e++) {
		const char *s = *e, *n = name;
		while (*n && *s == *n)
			s++, n++;
		if (*n == '\0' && *s == '=')
			return s + 1;
	}
	return NULL;
}

static bool parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "1", "on", "yes", "true" };
	static const char *const no[] = { "0", "off", "no", "false" };
	for (unsigned i = 0; i < 4; i++) {
		if (str_ieq(s, yes[i]))
			return *out = true, true;
		if (str_ieq(s, no[i]))
			return *out = false, true;
	}
	return false;
}

static bool parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
	uint64_t v = 0;
	if (*s < '0' || *s > '9')
		return false;
	while (*s >= '0' && *s <= '9') {
		v = v * 10 + (uint64_t)(*s++ - '0');
		if (v > UINT32_MAX)
			return false;
	}
	switch (lower(*s)) {
	case 'k': v <<= 10, s++; break;
	case 'm': v <<= 20, s++; break;
	case 'g': v <<= 30, s++; break;
	default: break;
	}
	if (*s == 'b' || *s == 'B')
		s++;
	if (*s != '\0' || v < min || v > max)
		return false;
	*out = (uint32_t)v;
	return true;
}

void _sm_options_init(void)
{
	char name[64];
	for (unsigned i = 0; i < sizeof options / sizeof options[0]; i++) {
		const struct option_desc *o = &options[i];
		_sm_format(name, sizeof name, "SIGMALLOC_%s", o->name);
		const char *s = env_lookup(name);
		if (!s)
			continue;
		bool ok, flag = false;
		if (o->kind == OPT_BOOL) {
			ok = parse_bool(s, o->value);
		} else if (o->kind == OPT_AUTO) { /* a boolean, or "auto" */
			ok = str_ieq(s, "auto") || parse_bool(s, &flag);
			if (ok)
				*(uint32_t *)o->value = str_ieq(s, "auto") ? 2u : flag;
		} else {
			ok = parse_u32(s, o->min, o->max, o->value);
		}
		if (!ok)
			_sm_message("sigmalloc: ignoring %s=%s (%s); keeping the default\n", name, s,
			            o->kind == OPT_U32 ? "expected a number in range, K/M/G allowed"
			                               : "expected 1/0, on/off, yes/no, or auto");
	}
	if (_sm_options.verbose) {
		for (unsigned i = 0; i < sizeof options / sizeof options[0]; i++) {
			const struct option_desc *o = &options[i];
			uint32_t v = o->kind == OPT_BOOL ? *(bool *)o->value : *(uint32_t *)o->value;
			(void)v;
			_sm_message("sigmalloc: SIGMALLOC_%-10s = %u  (%s)\n", o->name, v, o->what);
		}
		_sm_message("sigmalloc: %u classes 16..%u B, stats %s\n", (unsigned)SM_NUM_CLASSES,
		            SM_MAX_SMALL, sm_config_stats ? "on" : "off");
	}
}
