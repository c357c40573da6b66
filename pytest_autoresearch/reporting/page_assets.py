"""report.html's style and script, inline (the page needs no network), and its CSP.

The script is fixed text (the page's data travels in ``data-`` attributes), so the page's
Content-Security-Policy allows exactly it by hash and nothing else: no remote script, style,
image or connection but the page's own server.
"""

from __future__ import annotations

import base64
import hashlib

CSS = """
:root{--bg:#fff;--fg:#1d2126;--mute:#5f6b76;--line:#d8dee4;--card:#f6f8fa;--keep:#1a7f37;
--discard:#8c959f;--crash:#cf222e;--stale:#bc4c00;--other:#8250df;--front:#0969da;
--band:rgba(9,105,218,.13);--add:#dafbe1;--del:#ffebe9;--link:#0969da}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--mute:#8d96a0;
--line:#30363d;--card:#161b22;--keep:#3fb950;--discard:#6e7681;--crash:#f85149;
--stale:#db6d28;--other:#a371f7;--front:#58a6ff;--band:rgba(88,166,255,.16);
--add:rgba(46,160,67,.18);--del:rgba(248,81,73,.18);--link:#58a6ff}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1180px;margin:0 auto;padding:12px 14px 40px}
a{color:var(--link)}
h1{font-size:1.3em;margin:.3em 0}h2{font-size:1.1em;margin:1.4em 0 .5em}
h3{font-size:1em;margin:1em 0 .4em}
code,pre,.num{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em}
.state{display:inline-block;padding:2px 9px;border-radius:10px;font-weight:600;font-size:.85em}
.state.live{background:var(--keep);color:#fff}.state.ended{background:var(--discard);color:#fff}
.banner{background:var(--del);padding:6px 10px;border-radius:6px;margin:8px 0}
.stats{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:8px;
margin:10px 0}
.stat{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:7px 10px}
.stat b{display:block;font-size:1.05em}.stat span{color:var(--mute);font-size:.82em}
.charts{display:grid;grid-template-columns:2fr 1fr;gap:10px}
.charts.one{grid-template-columns:1fr}
figure{margin:0;background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:6px}
figcaption{color:var(--mute);font-size:.85em;padding:0 4px}
svg.chart{width:100%;height:auto;display:block}
.axis{stroke:var(--mute)}.grid{stroke:var(--line)}.tick{fill:var(--mute);font-size:11px}
.frontier{fill:none;stroke:var(--front);stroke-width:2}.band{fill:var(--band)}
.sample{fill:var(--mute);opacity:.5}
.pt{stroke:var(--bg);stroke-width:1}.pt.keep{fill:var(--keep)}.pt.discard{fill:var(--discard)}
.pt.crash{fill:var(--crash)}.pt.stale{fill:var(--stale)}.pt.other{fill:var(--other)}
.legend{font-size:.82em;color:var(--mute)}.legend i{display:inline-block;width:9px;
height:9px;border-radius:50%;margin:0 3px 0 10px}
.tools{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin:6px 0}
.tools button,.tools input{font:inherit;font-size:.85em;padding:3px 9px;border-radius:6px;
border:1px solid var(--line);background:var(--card);color:var(--fg)}
.tools button[aria-pressed=true]{background:var(--front);color:#fff;border-color:var(--front)}
.row{display:grid;grid-template-columns:3.2em 5em 6.5em 6em minmax(0,1fr) 6em 4em 4.5em 4.5em;
gap:6px;align-items:baseline;padding:5px 6px}
.head{font-size:.8em;color:var(--mute);border-bottom:1px solid var(--line)}
details.exp{border-bottom:1px solid var(--line)}
details.exp>summary{list-style:none;cursor:pointer}
details.exp>summary::-webkit-details-marker{display:none}
details.exp>summary:hover,details.exp[open]>summary{background:var(--card)}
details.exp:target>summary{outline:2px solid var(--front)}
.desc{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.st{font-weight:600}.st.keep{color:var(--keep)}.st.crash,.st.error,.st.rejected{color:var(--crash)}
.st.discard{color:var(--discard)}.st.stale{color:var(--stale)}
.body{padding:4px 10px 12px;overflow-x:auto}
.body dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:6px 0}
.body dt{color:var(--mute)}.body dd{margin:0;overflow-wrap:anywhere}
pre{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px;
overflow-x:auto;margin:6px 0;white-space:pre}
pre.diff span{display:block}pre .a{background:var(--add)}pre .d{background:var(--del)}
pre .h{color:var(--mute)}
table{border-collapse:collapse;width:100%;font-size:.9em;display:block;overflow-x:auto}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{color:var(--mute);font-weight:600}
.bar{display:inline-block;height:8px;background:var(--front);border-radius:4px;
vertical-align:middle;margin-right:6px}
.mute{color:var(--mute)}footer{color:var(--mute);font-size:.82em;margin-top:2em}
@media (max-width:760px){.charts{grid-template-columns:1fr}
.row{grid-template-columns:2.6em 4.6em 1fr 5.4em}
.row>.proposer,.row>.worker,.row>.cost,.row>.time{display:none}
.row>.desc{grid-column:1/-1;white-space:normal}.head>.desc{display:none}}
"""

# Fixed text: the page's state is in data- attributes of <html>. Over http(s) it polls
# state.json and swaps <main> in place when the record grew (no reload; open rows stay
# open); opened as a file, a live page reloads itself every 30 s.
JS = """(function(){
var d=document,h=d.documentElement,fails=0,POLL=2000;
function openIds(){return Array.prototype.map.call(d.querySelectorAll("details[open]"),
function(e){return e.id}).filter(Boolean)}
function reopen(ids){ids.forEach(function(id){var e=d.getElementById(id);if(e)e.open=true})}
var want="all",text="";
function filter(){var q=text.toLowerCase();
Array.prototype.forEach.call(d.querySelectorAll("details.exp"),function(e){
var ok=(want==="all"||e.dataset.status===want)&&(!q||e.textContent.toLowerCase().indexOf(q)>=0);
e.hidden=!ok});
Array.prototype.forEach.call(d.querySelectorAll("[data-want]"),function(b){
b.setAttribute("aria-pressed",b.dataset.want===want?"true":"false")})}
function wire(){Array.prototype.forEach.call(d.querySelectorAll("[data-want]"),function(b){
b.onclick=function(){want=b.dataset.want;filter()}});
var s=d.getElementById("q");if(s){s.value=text;s.oninput=function(){text=s.value;filter()}}
filter()}
function banner(msg){var b=d.getElementById("banner");if(b){b.textContent=msg;b.hidden=false}}
function swap(html){var doc=new DOMParser().parseFromString(html,"text/html");
var m=doc.querySelector("main");if(!m)return;var ids=openIds();
d.querySelector("main").replaceWith(m);reopen(ids);d.title=doc.title;
h.dataset.version=doc.documentElement.dataset.version;
h.dataset.live=doc.documentElement.dataset.live;wire()}
function tick(){fetch("state.json",{cache:"no-store"}).then(function(r){return r.json()})
.then(function(s){fails=0;if(String(s.version)!==h.dataset.version){
return fetch("report.html",{cache:"no-store"}).then(function(r){return r.text()}).then(swap)}})
.catch(function(){if(++fails>=3){h.dataset.live="0";
banner("The page's server stopped answering: the run has ended or was stopped. "
+"This is its last state.")}})
.then(function(){if(fails<3)setTimeout(tick,POLL)})}
try{reopen(JSON.parse(sessionStorage.getItem("autoresearch-open")||"[]"))}catch(e){}
wire();
if(location.protocol==="http:"||location.protocol==="https:"){setTimeout(tick,POLL)}
else if(h.dataset.live==="1"){setTimeout(function(){
try{sessionStorage.setItem("autoresearch-open",JSON.stringify(openIds()))}catch(e){}
location.reload()},30000)}
})();"""


def _hash(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


CSP = (
    "default-src 'none'; "
    f"script-src 'sha256-{_hash(JS)}'; "
    "style-src 'unsafe-inline'; "
    "img-src 'self' data:; "
    "connect-src 'self'; "
    "base-uri 'none'; form-action 'none'"
)
