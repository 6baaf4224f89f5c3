/*
 * Why a runner died, in words: the host's error when the enclave crashed,
 * was stopped by the sandbox, ran out of time or was aborted. How it ended
 * comes from the kernel (its wait status); what it was doing (the Call, the
 * fault address, the stack, a forbidden system call's number) comes from
 * notes the enclave's own process wrote, and the message says so. The
 * stack arrives as (module, offset) pairs and is symbolized here, outside
 * the sandbox, with elfutils' libdwfl from the image the host read and the
 * system libraries the runner had loaded.
 */
#include <elfutils/libdwfl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <seccomp.h>

#include "backends/proc/proc.h"
#include "core/internal.h"

/* Where module i is placed in the symbolizer's address space: far apart, so none overlap. */
#define MODULE_BASE(i) (((Dwarf_Addr)(i) + 1) << 40)

/* Append printf-style text to out (cap bytes), truncating. */
static void append(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void append(char *out, size_t cap, const char *fmt, ...)
{
	size_t len = strlen(out);
	va_list ap;

	if (len + 1 >= cap)
		return;
	va_start(ap, fmt);
	vsnprintf(out + len, cap - len, fmt, ap);
	va_end(ap);
}

/* No separate debug files (and never a debuginfod download): the DWARF in the files themselves. */
static int no_debuginfo(Dwfl_Module *m, void **u, const char *mod, Dwarf_Addr base, const char *file,
                        const char *debuglink, GElf_Word crc, char **path)
{
	(void)m, (void)u, (void)mod, (void)base, (void)file, (void)debuglink, (void)crc, (void)path;
	return -1;
}

static const Dwfl_Callbacks callbacks = {
    .find_elf = NULL,
    .find_debuginfo = no_debuginfo,
    .section_address = dwfl_offline_section_address,
};

/* The module index of frame f among the distinct modules of c, reporting it to dwfl the first time. */
static int module_of(Dwfl *dwfl, const moat_proc_crash *c, uint32_t f, int image_fd)
{
	const struct moat_proc_crash_frame *fr = &c->frames[f];
	char file[64];
	uint32_t i;

	for (i = 0; i < f; i++)
		if ((c->frames[i].flags & MOAT_PROC_FRAME_IMAGE) == (fr->flags & MOAT_PROC_FRAME_IMAGE) &&
		    strncmp(c->frames[i].module, fr->module, MOAT_PROC_CRASH_NAME) == 0)
			return (int)i;
	if (fr->flags & MOAT_PROC_FRAME_IMAGE) {
		if (image_fd < 0)
			return -1;
		snprintf(file, sizeof(file), "/proc/self/fd/%d", image_fd);
		dwfl_report_elf(dwfl, "enclave", file, -1, MODULE_BASE(f), false);
	} else if (fr->module[0] == '/') {
		char name[MOAT_PROC_CRASH_NAME + 1];

		memcpy(name, fr->module, MOAT_PROC_CRASH_NAME);
		name[MOAT_PROC_CRASH_NAME] = '\0';
		dwfl_report_elf(dwfl, name, name, -1, MODULE_BASE(f), false);
	} else {
		return -1;
	}
	return (int)f;
}

static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

/* One frame: "#N function (file.c:line)", "#N function+0xOFF (module)" or "#N 0xADDR". */
static void frame_text(char *out, size_t cap, Dwfl *dwfl, const moat_proc_crash *c, uint32_t f, int m)
{
	const struct moat_proc_crash_frame *fr = &c->frames[f];
	Dwarf_Addr addr, look;
	Dwfl_Module *mod;
	Dwfl_Line *line;
	GElf_Off off = 0;
	GElf_Sym sym;
	const char *fn = NULL, *src = NULL;
	int lineno = 0;

	addr = m < 0 ? 0 : MODULE_BASE(m) + fr->offset;
	/* A return address points after the call: look up the call itself. */
	look = (fr->flags & MOAT_PROC_FRAME_RETURN) && addr ? addr - 1 : addr;
	mod = addr ? dwfl_addrmodule(dwfl, look) : NULL;
	if (mod) {
		fn = dwfl_module_addrinfo(mod, look, &off, &sym, NULL, NULL, NULL);
		if ((line = dwfl_module_getsrc(mod, look)) != NULL)
			src = dwfl_lineinfo(line, NULL, &lineno, NULL, NULL, NULL);
	}
	if (fn && src)
		append(out, cap, " #%u %s (%s:%d)", f, fn, base_name(src), lineno);
	else if (fn)
		append(out, cap, " #%u %s+0x%llx (%s)", f, fn,
		       (unsigned long long)(off + ((fr->flags & MOAT_PROC_FRAME_RETURN) ? 1 : 0)),
		       (fr->flags & MOAT_PROC_FRAME_IMAGE) ? "enclave" : base_name(fr->module));
	else if (fr->module[0] || (fr->flags & MOAT_PROC_FRAME_IMAGE))
		append(out, cap, " #%u %s+0x%llx", f,
		       (fr->flags & MOAT_PROC_FRAME_IMAGE) ? "enclave" : base_name(fr->module),
		       (unsigned long long)fr->offset);
	else
		append(out, cap, " #%u 0x%llx", f, (unsigned long long)fr->offset);
}

/*
 * The stack: every frame down to the last one in the image, and the one
 * below it (where the runner entered the enclave); 8 frames when none is in
 * the image.
 */
static void backtrace_text(char *out, size_t cap, const moat_proc_crash *c, int image_fd)
{
	uint32_t n = c->nframes < MOAT_PROC_CRASH_FRAMES ? c->nframes : MOAT_PROC_CRASH_FRAMES, last = 0, f;
	int in_image = 0, mods[MOAT_PROC_CRASH_FRAMES];
	Dwfl *dwfl;

	for (f = 0; f < n; f++)
		if (c->frames[f].flags & MOAT_PROC_FRAME_IMAGE) {
			last = f;
			in_image = 1;
		}
	last = in_image ? last + 1 : 7;
	if (!(dwfl = dwfl_begin(&callbacks)))
		return;
	for (f = 0; f < n && f <= last; f++)
		mods[f] = module_of(dwfl, c, f, image_fd);
	dwfl_report_end(dwfl, NULL, NULL);
	append(out, cap, "; backtrace:");
	for (f = 0; f < n && f <= last; f++)
		frame_text(out, cap, dwfl, c, f, mods[f]);
	if (f < n)
		append(out, cap, " ...");
	dwfl_end(dwfl);
}

/* What the crashed thread was doing. */
static void where_text(char *out, size_t cap, const moat_proc_crash *c)
{
	if (c->where != MOAT_PROC_CRASH_CALL)
		append(out, cap, " in a thread the enclave started itself");
	else if (c->selector == MOAT_PROC_SELECTOR_LOAD || c->selector == MOAT_PROTOCOL_SELECTOR_START)
		append(out, cap, " in its init function");
	else if (c->selector == MOAT_PROC_SELECTOR_STOP)
		append(out, cap, " in its finalizer");
	else if (c->selector == MOAT_SELECTOR_DONATE)
		append(out, cap, " in a donated thread (moat_thread_start)");
	else
		append(out, cap, " in entry call %llu", (unsigned long long)c->selector);
}

static int describe_signal(char *out, size_t cap, const moat_proc_death *d)
{
	int sig = WTERMSIG(d->status);
	const char *abbrev = sigabbrev_np(sig), *descr = sigdescr_np(sig);
	const moat_proc_crash *c = d->crash && d->crash->signo == sig ? d->crash : NULL;

	snprintf(out, cap, "%s: the enclave crashed", d->path);
	if (c)
		where_text(out, cap, c);
	append(out, cap, ": killed by signal %d (SIG%s, %s)", sig, abbrev ? abbrev : "?",
	       descr ? descr : "?");
	if (c && (sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL))
		append(out, cap, " at address 0x%llx", (unsigned long long)c->addr);
	if (c) {
		append(out, cap, " (the call, address and stack as the enclave's process reported them)");
		backtrace_text(out, cap, c, d->image_fd);
	}
	return MOAT_ECRASHED;
}

static int describe_sigsys(char *out, size_t cap, const moat_proc_death *d)
{
	char *name =
	    d->syscall_nr >= 0 ? seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, d->syscall_nr) : NULL;

	/*
	 * That it died by SIGSYS comes from the kernel; which call it was comes
	 * from a note the enclave's own process wrote, so say so.
	 */
	snprintf(out, cap, "%s: the enclave made a forbidden system call and was stopped (killed by SIGSYS",
	         d->path);
	if (d->syscall_nr >= 0)
		append(out, cap, "; the call, as the enclave's process reported it: %d, %s", d->syscall_nr,
		       name ? name : "?");
	/* A path call names the path, so a missing file or a library's data file is plain to see. */
	if (d->syscall_nr >= 0 && d->syscall_path)
		append(out, cap, " \"%s\"", d->syscall_path);
	append(out, cap, ")");
	free(name);
	return MOAT_ESANDBOX;
}

int moat__proc_describe_death(char *out, size_t cap, const moat_proc_death *d)
{
	int st = d->status;

	switch (d->why) {
	case MOAT_PROC_LOST_ABORT:
		snprintf(out, cap, "%s: the enclave was stopped by moat_enclave_abort()", d->path);
		return MOAT_ECANCELED;
	case MOAT_PROC_LOST_PROTOCOL:
		snprintf(out, cap, "%s: the enclave broke the frame protocol on its channel and was stopped",
		         d->path);
		return MOAT_ECRASHED;
	case MOAT_PROC_LOST_TIMEOUT:
		if (d->selector == MOAT_PROC_SELECTOR_LOAD || d->selector == MOAT_PROTOCOL_SELECTOR_START)
			snprintf(
			    out, cap,
			    "%s: the enclave's init did not finish within %u ms; the enclave was stopped",
			    d->path, d->timeout_ms);
		else
			snprintf(out, cap,
			         "%s: entry call %llu did not finish within %u ms; the enclave was stopped",
			         d->path, (unsigned long long)d->selector, d->timeout_ms);
		return MOAT_ETIMEDOUT;
	default: break;
	}
	if (st == -1) {
		snprintf(out, cap, "%s: the enclave's process is gone", d->path);
		return MOAT_ECRASHED;
	}
	if (d->killed) {
		snprintf(out, cap, "%s: the enclave closed its channel to the host and was stopped", d->path);
		return MOAT_ECRASHED;
	}
	if (WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS)
		return describe_sigsys(out, cap, d);
	if (WIFSIGNALED(st))
		return describe_signal(out, cap, d);
	snprintf(out, cap, "%s: the enclave's process exited with status %d", d->path, WEXITSTATUS(st));
	return MOAT_ECRASHED;
}
