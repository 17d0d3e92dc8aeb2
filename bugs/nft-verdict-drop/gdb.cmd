# From KASAN's report back to nf_tables' drop of the packet that ip_local_out() then sent on
# (bugs.sh runs this against `krr replay --gdb` of the recording).
break kasan_report
continue
printf "KASAN report: %lu bytes at %#lx, is_write %d\n", size, addr, is_write
set $bad = addr
bt 6
delete
# The hook's verdict: what nft_do_chain() returned for the rule.
break nf_hook_slow
reverse-continue
delete
break kfree_skb_reason
continue
set $skb = (unsigned long)skb
bt 4
finish
if $bad >= $skb && $bad < $skb + sizeof(struct sk_buff) && $_any_caller_is("nf_hook_slow", 0)
  printf "freed before the report by kfree_skb_reason() in nf_hook_slow() for the rule's drop verdict %#x: the bad address is %ld bytes into that %lu-byte sk_buff\n", verdict, $bad - $skb, sizeof(struct sk_buff)
else
  printf "the packet freed in nf_hook_slow was %#lx; the report is at %#lx\n", $skb, $bad
end
