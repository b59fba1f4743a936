#include <cstdio>
int main() { std::puts("apiserver-lb " APILB_VERSION); }
