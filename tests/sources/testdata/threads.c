/* threads.c: a process with N extra threads that ends the way it is told.
 *
 *   threads MODE NTHREADS [CODE]
 *
 * Half the threads sleep, half spin. Once all run, main prints "ready" and:
 *   exit   exit(CODE) from main (exit_group), the threads still running
 *   wait   waits for a signal from outside (no handlers installed)
 *   segv   waits; the last thread dereferences NULL
 *   exec   waits; the last thread execs /bin/true
 *   raise  sends itself signal CODE with kill(2)
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static pthread_barrier_t started, printed;
static const char *mode;
static int nthreads;

static void *run(void *arg)
{
    long i = (long)arg;
    pthread_barrier_wait(&started);
    int last = i == nthreads - 1 && (strcmp(mode, "segv") == 0 || strcmp(mode, "exec") == 0);
    if (last)                        /* after main's "ready" */
        pthread_barrier_wait(&printed);
    if (last && strcmp(mode, "segv") == 0)
        *(volatile int *)0 = 1;
    if (last && strcmp(mode, "exec") == 0) {
        execl("/bin/true", "true", (char *)0);
        _exit(127);
    }
    if (i % 2)
        for (volatile unsigned long n = 0;; n++)
            ;
    for (;;)
        pause();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    mode = argv[1];
    nthreads = atoi(argv[2]);
    int code = argc > 3 ? atoi(argv[3]) : 0;
    struct rlimit nocore = {0, 0};    /* a crash leaves no core file behind */
    setrlimit(RLIMIT_CORE, &nocore);

    pthread_barrier_init(&started, 0, nthreads + 1);
    pthread_barrier_init(&printed, 0, 2);
    for (long i = 0; i < nthreads; i++) {
        pthread_t t;
        if (pthread_create(&t, 0, run, (void *)i) != 0)
            return 2;
    }
    pthread_barrier_wait(&started);
    printf("ready\n");
    fflush(stdout);
    if (strcmp(mode, "exit") == 0)
        exit(code);
    if (strcmp(mode, "raise") == 0)
        kill(getpid(), code);
    if (nthreads > 0 && (strcmp(mode, "segv") == 0 || strcmp(mode, "exec") == 0))
        pthread_barrier_wait(&printed);
    for (;;)
        pause();
}
