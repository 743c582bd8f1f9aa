#!/usr/bin/env python3
# The longest functions outside tests (crates/*/src, test modules cut), longest first:
# `scripts/longest-functions.py [N]` from the repository root.
import re,os,sys
res=[]
for root,_,files in os.walk('crates'):
    if '/tests' in root or 'target' in root: continue
    for f in files:
        if not f.endswith('.rs'): continue
        p=os.path.join(root,f)
        lines=open(p).read().split('\n')
        try:
            cut=next(i for i,l in enumerate(lines) if l.startswith('#[cfg(test)]'))
            lines=lines[:cut]
        except StopIteration: pass
        i=0
        while i<len(lines):
            m=re.match(r'^(\s*)(pub(\([^)]*\))? )?(async )?fn (\w+)',lines[i])
            if m:
                ind=len(m.group(1)); name=m.group(5)
                k=i
                while k<len(lines) and '{' not in lines[k] and not lines[k].rstrip().endswith(';'): k+=1
                if k<len(lines) and lines[k].rstrip().endswith(';') and '{' not in lines[k]:
                    i=k+1; continue
                j=i+1
                while j<len(lines) and not (lines[j].startswith(' '*ind+'}') and len(lines[j].rstrip())==ind+1):
                    j+=1
                res.append((j-i+1,p,name))
            i+=1
res.sort(reverse=True)
for r in res[:int(sys.argv[1]) if len(sys.argv)>1 else 15]: print(*r)
