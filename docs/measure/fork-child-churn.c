/* docs/MEMORY.md: build with gcc -O2 -pthread FILE (fork-arenas.c: -ljemalloc) and run
 * plain, with LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2, and with
 * LD_PRELOAD=build/preload/libsigmalloc.so. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(){ void*v[10000]; for(int i=0;i<10000;i++) v[i]=malloc(i%3000+1);
 double t0=now(); for(int k=0;k<200;k++){pid_t p=fork(); if(!p) _exit(0); waitpid(p,0,0);} double t1=now();
 for(int k=0;k<50;k++){pid_t p=fork(); if(!p){ void*w[1024]={0}; for(int i=0;i<200000;i++){int j=i%1024; free(w[j]); w[j]=malloc(1+(i*7919)%512);} _exit(0);} waitpid(p,0,0);} double t2=now();
 printf("fork+exit %.2f ms; fork+200k ops %.2f ms\n",(t1-t0)/200*1e3,(t2-t1)/50*1e3); return 0;}
