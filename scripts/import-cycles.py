#!/usr/bin/env python3
"""Lists import circles between Slipway's modules: reads every `use crate::`
and `super::` path under src/ (comments and unit-test modules left out),
maps each to the module file it names, ignores a module's own parent and
children, and prints each strongly connected group of more than one module.
Exits 1 when there is one. Used by scripts/test."""
import os,re,sys,itertools
root=sys.argv[1] if len(sys.argv)>1 else 'src'
mods={}
for dp,_,fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        p=os.path.join(dp,f); rel=os.path.relpath(p,root)[:-3]
        parts=rel.split('/')
        if parts[-1] in ('mod','lib','main'): parts=parts[:-1]
        mods['::'.join(parts)]=p
def resolve(cur,path):
    # path like a::b::c ; find longest module prefix
    segs=path.split('::')
    for n in range(len(segs),0,-1):
        m='::'.join(segs[:n])
        if m in mods: return m
    return None
edges={}
for m,p in mods.items():
    s=open(p).read()
    s=re.sub(r'#\[cfg\(test\)\]\s*mod tests\s*\{.*','',s,flags=re.S)
    s=re.sub(r'//[^\n]*','',s)
    deps=set()
    for u in re.findall(r'crate::([a-zA-Z0-9_:]+)',s):
        t=resolve(m,u.rstrip(':'))
        if t is not None and t!=m: deps.add(t)
    for u in re.findall(r'\bsuper::([a-zA-Z0-9_:]+)',s):
        par='::'.join(m.split('::')[:-1]) if not p.endswith('mod.rs') else '::'.join(m.split('::')[:-1])
        base=(par+'::' if par else '')+u.rstrip(':')
        t=resolve(m,base)
        if t is not None and t!=m: deps.add(t)
    edges[m]=deps
# collapse to top-level-ish granularity: use module files as nodes, ignore parent-child (mod.rs re-export) edges
def parentchild(a,b): return a.startswith(b+'::') or b.startswith(a+'::') or a=='' or b==''
g={m:{d for d in ds if not parentchild(m,d)} for m,ds in edges.items()}
# tarjan
idx={};low={};st=[];on=set();res=[];i=[0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v]=low[v]=i[0];i[0]+=1;st.append(v);on.add(v)
    for w in g.get(v,()):
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        if len(comp)>1: res.append(sorted(comp))
for v in g:
    if v not in idx: sc(v)
for c in res: print('cycle:',' '.join(c))
print(len(res),'import circles between modules')
sys.exit(1 if res else 0)
