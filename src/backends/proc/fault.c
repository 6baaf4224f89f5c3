/*
 * The runner's crash reports. A fatal signal in the enclave (SIGSEGV,
 * SIGBUS, SIGFPE, SIGILL, SIGABRT) runs a handler that writes one report on
 * the control socket and then lets the signal kill the process, so the host
 * still learns how the runner ended from the kernel. The report names the
 * Call the thread was serving, the signal and its address, and the stack as
 * (module, offset) pairs; the host turns them into function names and source
 * lines from the files (report.c), outside the sandbox.
 *
 * Inside the sandbox nothing can be opened, and a crashed process may hold
 * any lock, so the handler only reads what was prepared before: the stack is
 * walked with glibc's backtrace() (libgcc's unwinder, loaded and warmed
 * before the sandbox, reading the unwind tables already in memory), and
 * addresses are matched against a table of the loaded modules made when the
 * image was loaded. Worker threads run the handler on an alternate stack, so
 * a stack overflow is reported too.
 */
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <link.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <ucontext.h>
#include <unistd.h>

#include "backends/proc/runner.h"

#if defined(__x86_64__)
#define FAULT_PC(uc) ((uintptr_t)(uc)->uc_mcontext.gregs[REG_RIP])
#elif defined(__aarch64__)
#define FAULT_PC(uc) ((uintptr_t)(uc)->uc_mcontext.pc)
#endif

/* Most modules the table holds: the runner, libc and its kin, the image. */
#define MAX_MODULES 32
/* The alternate signal stack of a worker thread. */
#define ALT_STACK_SIZE (64 * 1024)

typedef struct module {
	uintptr_t base, start, end;
	int image;
	char name[MOAT_PROC_CRASH_NAME];
} module;

static int fault_fd = -1;
static char runner_exe[MOAT_PROC_CRASH_NAME];
static module modules[MAX_MODULES];
static int n_modules;
static uintptr_t image_base;
static int reported;

_Thread_local uint64_t moat__runner_selector;
_Thread_local int moat__runner_depth;

static int add_module(struct dl_phdr_info *info, size_t size, void *arg)
{
	module *m;
	int i;

	(void)size;
	(void)arg;
	if (n_modules == MAX_MODULES)
		return 1;
	m = &modules[n_modules];
	memset(m, 0, sizeof(*m));
	m->base = (uintptr_t)info->dlpi_addr;
	m->start = UINTPTR_MAX;
	for (i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];

		if (ph->p_type != PT_LOAD)
			continue;
		if (m->base + ph->p_vaddr < m->start)
			m->start = m->base + ph->p_vaddr;
		if (m->base + ph->p_vaddr + ph->p_memsz > m->end)
			m->end = m->base + ph->p_vaddr + ph->p_memsz;
	}
	if (m->start >= m->end)
		return 0;
	m->image = image_base && m->base == image_base;
	/* The main program has no name in the list: it is the runner itself. */
	if (!m->image)
		snprintf(m->name, sizeof(m->name), "%s",
		         info->dlpi_name && *info->dlpi_name ? info->dlpi_name : runner_exe);
	n_modules++;
	return 0;
}

void moat__runner_fault_modules(void *image_dl)
{
	struct link_map *lm = NULL;

	if (image_dl && dlinfo(image_dl, RTLD_DI_LINKMAP, &lm) == 0 && lm)
		image_base = (uintptr_t)lm->l_addr;
	n_modules = 0;
	dl_iterate_phdr(add_module, NULL);
}

/* Fill f from a code address. Async-signal-safe. */
static void locate(struct moat_proc_crash_frame *f, uintptr_t pc, uint32_t flags)
{
	int i;

	f->flags = flags;
	f->offset = pc;
	for (i = 0; i < n_modules; i++) {
		if (pc >= modules[i].start && pc < modules[i].end) {
			f->offset = pc - modules[i].base;
			if (modules[i].image)
				f->flags |= MOAT_PROC_FRAME_IMAGE;
			memcpy(f->module, modules[i].name, sizeof(f->module));
			return;
		}
	}
}

/* Walk the crashed thread's stack from the faulting instruction. Async-signal-safe once warmed. */
static void walk(moat_proc_crash *c, uintptr_t fault_pc)
{
	void *pcs[MOAT_PROC_CRASH_FRAMES + 8];
	int n = backtrace(pcs, MOAT_PROC_CRASH_FRAMES + 8), i, from = -1;

	/* The first frames are this handler's and the kernel's signal trampoline: start at the fault. */
	for (i = 0; i < n && from < 0; i++)
		if ((uintptr_t)pcs[i] == fault_pc)
			from = i;
	/* A jump to a bad address cannot be unwound from; report the address alone. */
	locate(&c->frames[0], fault_pc, 0);
	c->nframes = 1;
	for (i = from + 1; from >= 0 && i < n && c->nframes < MOAT_PROC_CRASH_FRAMES; i++)
		locate(&c->frames[c->nframes++], (uintptr_t)pcs[i], MOAT_PROC_FRAME_RETURN);
}

static void on_fault(int sig, siginfo_t *si, void *ucv)
{
	static moat_proc_crash c;
	static const moat_proc_note head = {MOAT_PROC_NOTE_MAGIC, MOAT_PROC_NOTE_CRASH, 0, 0, 0, 0};
	struct sigaction sa;
	sigset_t set;

	/* One report per process: the first thread to crash is the one that matters. */
	if (!__atomic_exchange_n(&reported, 1, __ATOMIC_ACQ_REL)) {
		struct iovec iov[2] = {{(void *)&head, sizeof(head)}, {&c, sizeof(c)}};

		memset(&c, 0, sizeof(c));
		c.where = moat__runner_depth ? MOAT_PROC_CRASH_CALL : MOAT_PROC_CRASH_OUTSIDE;
		c.selector = moat__runner_selector;
		c.signo = sig;
		c.code = si->si_code;
		c.addr = (uint64_t)(uintptr_t)si->si_addr;
		walk(&c, FAULT_PC((ucontext_t *)ucv));
		/* One write (sendmsg is not allowed in the sandbox): the host reads it after the death. */
		if (writev(fault_fd, iov, 2) < 0)
			c.nframes = 0;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	sigaction(sig, &sa, NULL);
	sigemptyset(&set);
	sigaddset(&set, sig);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	raise(sig);
	_exit(128 + sig);
}

int moat__runner_fault_init(int note_fd)
{
	static const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
	struct sigaction sa;
	void *warm[4];
	ssize_t n;
	size_t i;

	fault_fd = note_fd;
	n = readlink("/proc/self/exe", runner_exe, sizeof(runner_exe) - 1);
	runner_exe[n > 0 ? n : 0] = '\0';
	/* The first backtrace() loads libgcc's unwinder: do it while files can still be opened. */
	backtrace(warm, 4);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_fault;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (sigaction(sigs[i], &sa, NULL) < 0)
			return -errno;
	return 0;
}

void *moat__runner_fault_thread_begin(void)
{
	stack_t ss;

	memset(&ss, 0, sizeof(ss));
	ss.ss_sp = malloc(ALT_STACK_SIZE);
	ss.ss_size = ALT_STACK_SIZE;
	if (ss.ss_sp && sigaltstack(&ss, NULL) < 0) {
		free(ss.ss_sp);
		ss.ss_sp = NULL;
	}
	return ss.ss_sp;
}

void moat__runner_fault_thread_end(void *stack)
{
	stack_t ss;

	if (!stack)
		return;
	memset(&ss, 0, sizeof(ss));
	ss.ss_flags = SS_DISABLE;
	sigaltstack(&ss, NULL);
	free(stack);
}
