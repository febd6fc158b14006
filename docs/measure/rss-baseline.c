/* docs/MEMORY.md: build with gcc -O2 -pthread FILE (fork-arenas.c: -ljemalloc) and run
 * plain, with LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2, and with
 * LD_PRELOAD=build/preload/libsigmalloc.so. */
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
static long rss(void){FILE*f=fopen("/proc/self/statm","r");long a,b;fscanf(f,"%ld %ld",&a,&b);fclose(f);return b*4;}
static void*t(void*a){free(malloc(10));return a;}
int main(int c,char**v){ free(malloc(10)); long r1=rss(); if(c>1){pthread_t th; pthread_create(&th,0,t,0); pthread_join(th,0);} printf("rss after first malloc %ld KiB, after second thread %ld KiB\n", r1, rss()); return 0;}
