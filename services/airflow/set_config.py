"""Set options in Airflow's generated airflow.cfg in place, keeping its comments and secrets.

Usage: python3 services/airflow/set_config.py AIRFLOW_CFG section.key=value [...]
bin/services uses it so that a plain `AIRFLOW_HOME=.local/airflow airflow ...` (e.g. `airflow
dags test`) sees the same DAG folder, ports and sizes as the services it starts.
"""
import re
import sys


def set_options(path, assignments):
    wanted = {}
    for a in assignments:
        name, value = a.split("=", 1)
        section, key = name.split(".", 1)
        wanted.setdefault(section, {})[key] = value
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    out, section, done = [], None, set()

    def flush(sec):  # keys of a section that were not in the file go at its end
        for key, value in wanted.get(sec, {}).items():
            if (sec, key) not in done:
                out.append(f"{key} = {value}")
                done.add((sec, key))

    for line in lines:
        m = re.match(r"^\[([^\]]+)\]\s*$", line)
        if m:
            flush(section)
            section = m.group(1)
        else:
            m = re.match(r"^([A-Za-z0-9_]+)\s*=", line)
            if m and m.group(1) in wanted.get(section, {}):
                key = m.group(1)
                line = f"{key} = {wanted[section][key]}"
                done.add((section, key))
        out.append(line)
    flush(section)
    for sec in wanted:
        if any((sec, k) not in done for k in wanted[sec]):
            out.append(f"[{sec}]")
            flush(sec)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    set_options(sys.argv[1], sys.argv[2:])
