"""Inclusive share of each frame in a py-spy raw profile (`py-spy record -f raw -o FILE`).

    python bench/profiles/summarise.py FILE [TOP]
"""
import sys
from collections import Counter
inc=Counter(); total=0
for line in open(sys.argv[1]):
    stack,_,n=line.rstrip().rpartition(' '); n=int(n); total+=n
    seen=set()
    for f in stack.split(';'):
        name=f.split(' (')[0]; loc=f.rsplit('/',1)[-1].rstrip(')')
        key=f"{name} {loc}"
        if key in seen: continue
        seen.add(key); inc[key]+=n
print("samples", total)
for k,v in inc.most_common(int(sys.argv[2]) if len(sys.argv)>2 else 50): print(f"{100*v/total:5.1f}% {k[:140]}")
