# From KASAN's report back to the allocation of the page the legacy options are joined in
# (bugs.sh runs this against `krr replay --gdb` of the recording).
break kasan_report
continue
printf "KASAN report: %lu bytes at %#lx, is_write %d\n", size, addr, is_write
set $bad = addr
bt 5
delete
# The first option allocated the page: kmalloc(PAGE_SIZE), a constant size, so kmalloc_trace.
break kmalloc_trace if size == 4096
reverse-continue
bt 3
finish
printf "buffer %#lx, 4096 bytes; the bad write at %#lx is %ld bytes past its end\n", $rax, $bad, $bad - ($rax + 4096)
