/* docs/MEMORY.md: build with gcc -O2 -pthread FILE (fork-arenas.c: -ljemalloc) and run
 * plain, with LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2, and with
 * LD_PRELOAD=build/preload/libsigmalloc.so. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <jemalloc/jemalloc.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(int argc,char**argv){ int n=atoi(argv[1]); for(int i=0;i<n;i++){unsigned ind; size_t l=sizeof ind; mallctl("arenas.create",&ind,&l,NULL,0); void*p=mallocx(64,MALLOCX_ARENA(ind)); (void)p;}
 double a=now(); for(int k=0;k<20;k++){ pid_t p=fork(); if(!p) _exit(0); waitpid(p,0,0);} printf("%d arenas: fork+wait %.2f ms\n",n,(now()-a)/20*1e3); return 0;}
