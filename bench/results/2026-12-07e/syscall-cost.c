#define _GNU_SOURCE
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e9+t.tv_nsec;}
int main(){
  int n=2000000; double t0=now();
  for(int i=0;i<n;i++) syscall(SYS_getppid);
  double t1=now();
  printf("getppid: %.0f ns per call\n",(t1-t0)/n);
  int p[2]; pipe(p); char b[64]={0};
  t0=now();
  for(int i=0;i<n/2;i++){ write(p[1],b,64); read(p[0],b,64);} 
  t1=now();
  printf("pipe write+read 64B: %.0f ns per pair\n",(t1-t0)/(n/2));
  return 0;
}
