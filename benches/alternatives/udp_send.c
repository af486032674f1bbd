/* A loopback UDP sendto (+ draining recv) loop on the host, best of 5: run it with a sandbox running
 * (its cgroup-BPF hooks switch the kernel's static keys on for every socket on the host) and
 * without (no sandbox, no lingerer) to see what the keys cost a process outside any sandbox. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e9+t.tv_nsec;}
int main(int argc,char**argv){
  int n=argc>1?atoi(argv[1]):200000;
  int r=socket(AF_INET,SOCK_DGRAM,0); struct sockaddr_in a={.sin_family=AF_INET,.sin_addr.s_addr=htonl(0x7f000001)};
  bind(r,(void*)&a,sizeof a); socklen_t l=sizeof a; getsockname(r,(void*)&a,&l);
  int s=socket(AF_INET,SOCK_DGRAM,0); char b[16]={0}; char rb[64];
  double best=1e18;
  for(int round=0;round<5;round++){
    double t0=now();
    for(int i=0;i<n;i++){ sendto(s,b,sizeof b,0,(void*)&a,sizeof a); if((i&63)==63) while(recv(r,rb,sizeof rb,MSG_DONTWAIT)>0); }
    double d=(now()-t0)/n; if(d<best)best=d;
  }
  printf("%.1f ns per sendto (+recv share), best of 5\n",best);
  return 0;
}
