# From KASAN's report back to the free of the TLS context the listener's close reads (bugs.sh
# runs this against `krr replay --gdb` of the recording).
break kasan_report
continue
printf "KASAN report: %lu bytes at %#lx, is_write %d\n", size, addr, is_write
set $bad = addr
bt 6
delete
# The child's close freed the context both sockets point at.
break tls_ctx_free
reverse-continue
set $ctx = (unsigned long)ctx
bt 8
if $bad >= $ctx && $bad < $ctx + sizeof(struct tls_context)
  printf "freed before the report by tls_ctx_free: the bad address is %ld bytes into that %lu-byte context\n", $bad - $ctx, sizeof(struct tls_context)
else
  printf "the last tls_ctx_free before the report freed %#lx, which does not hold %#lx\n", $ctx, $bad
end
