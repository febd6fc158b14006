/* docs/MEMORY.md: build with gcc -O2 -pthread FILE (fork-arenas.c: -ljemalloc) and run
 * plain, with LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2, and with
 * LD_PRELOAD=build/preload/libsigmalloc.so. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
static void*t(void*a){free(malloc(10));return a;}
int main(int c,char**v){ for(int i=0;i<100;i++) free(malloc(16+i*8)); if(c>1){pthread_t th; pthread_create(&th,0,t,0); pthread_join(th,0);}
 double a=now(); for(int k=0;k<40;k++){ pid_t p=fork(); if(!p) _exit(0); waitpid(p,0,0);} printf("%s: fork+exit+wait %.2f ms\n", c>1?"after a 2nd thread":"single thread", (now()-a)/40*1e3); return 0;}
