/*
 * The one error sink, and a formatter that needs no libc.
 *
 * Who calls in: anyone, at any depth, including signal handlers and the
 * fork child: _sm_format works on a caller's stack buffer, and output is one
 * write(2) per message (async-signal-safe). No printf (it locks stdio and may
 * allocate), no strerror, no getenv.
 *
 * Conversions: %s %c %d %u %x %p %zu %zx %lu %llu %%, with an optional '-'
 * (left-justify) and a decimal width. Anything else is copied as is.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

struct out {
	char *buf;
	size_t cap, len;
};

static void out_char(struct out *o, char ch)
{
	if (o->len + 1 < o->cap)
		o->buf[o->len++] = ch;
}

static void out_padded(struct out *o, const char *s, size_t n, unsigned width, bool left)
{
	size_t pad = width > n ? width - n : 0;
	if (!left)
		while (pad--)
			out_char(o, ' ');
	for (size_t i = 0; i < n; i++)
		out_char(o, s[i]);
	if (left)
		while (pad--)
			out_char(o, ' ');
}

static void out_number(struct out *o, unsigned long long v, unsigned base, bool negative,
                       unsigned width, bool left)
{
	char tmp[24];
	size_t n = 0;
	do {
		tmp[sizeof tmp - 1 - n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	if (negative)
		tmp[sizeof tmp - 1 - n++] = '-';
	out_padded(o, tmp + sizeof tmp - n, n, width, left);
}

static size_t format_va(char *buf, size_t cap, const char *fmt, va_list ap)
{
	struct out o = { buf, cap, 0 };
	for (const char *f = fmt; *f; f++) {
		if (*f != '%') {
			out_char(&o, *f);
			continue;
		}
		f++;
		bool left = false;
		unsigned width = 0;
		if (*f == '-') {
			left = true;
			f++;
		}
		while (*f >= '0' && *f <= '9')
			width = width * 10 + (unsigned)(*f++ - '0');
		int longs = 0;
		bool zsize = false;
		while (*f == 'l') {
			longs++;
			f++;
		}
		if (*f == 'z') {
			zsize = true;
			f++;
		}
		switch (*f) {
		case 's': {
			const char *s = va_arg(ap, const char *);
			if (!s)
				s = "(null)";
			size_t n = 0;
			while (s[n])
				n++;
			out_padded(&o, s, n, width, left);
			break;
		}
		case 'c':
			out_char(&o, (char)va_arg(ap, int));
			break;
		case 'd': {
			long long v = longs ? (longs > 1 ? va_arg(ap, long long) : va_arg(ap, long))
			                    : va_arg(ap, int);
			out_number(&o, v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v,
			           10, v < 0, width, left);
			break;
		}
		case 'u':
		case 'x': {
			unsigned long long v;
			if (zsize)
				v = va_arg(ap, size_t);
			else if (longs > 1)
				v = va_arg(ap, unsigned long long);
			else if (longs == 1)
				v = va_arg(ap, unsigned long);
			else
				v = va_arg(ap, unsigned);
			out_number(&o, v, *f == 'x' ? 16 : 10, false, width, left);
			break;
		}
		case 'p':
			out_char(&o, '0');
			out_char(&o, 'x');
			out_number(&o, (uintptr_t)va_arg(ap, void *), 16, false, width, left);
			break;
		case '%':
			out_char(&o, '%');
			break;
		case '\0':
			f--;
			break;
		default:
			out_char(&o, '%');
			out_char(&o, *f);
		}
	}
	if (cap)
		buf[o.len] = '\0';
	return o.len;
}

size_t _sm_format(char *buf, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	size_t n = format_va(buf, cap, fmt, ap);
	va_end(ap);
	return n;
}

void _sm_write_all(int fd, const char *buf, size_t len)
{
	int saved = errno; /* a message must not change the caller's errno */
	while (len) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		buf += n;
		len -= (size_t)n;
	}
	errno = saved;
}

static void message_va(const char *fmt, va_list ap)
{
	char buf[512];
	size_t n = format_va(buf, sizeof buf, fmt, ap);
	_sm_write_all(STDERR_FILENO, buf, n);
}

void _sm_message(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	message_va(fmt, ap);
	va_end(ap);
}

void _sm_fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	message_va(fmt, ap);
	va_end(ap);
	abort(); /* async-signal-safe; raises SIGABRT for a core dump */
}

void _sm_assert_fail(const char *what, const char *file, int line)
{
	_sm_fatal("sigmalloc: assertion failed: %s (%s:%d)\n", what, file, line);
}
