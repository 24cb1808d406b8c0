# atpred on RPM systems: user, directories and unit presets; not started on a fresh install
# (the configuration must be set up first); a running daemon is restarted on upgrade.
systemd-sysusers /usr/lib/sysusers.d/atpred.conf
systemd-tmpfiles --create /usr/lib/tmpfiles.d/atpred.conf
# The configuration's owner and mode are set once, on a fresh install ("$1" = 1). An upgrade
# keeps what an administrator set; it only moves 0.1's group atpre (the daemon's group then)
# to atpred, the daemon's group now, so that the daemon can still read it.
if [ "$1" -eq 1 ]; then
    chown root:atpred /etc/atpre/atpred.toml
    chmod 0640 /etc/atpre/atpred.toml
elif [ "$(stat -c %G /etc/atpre/atpred.toml 2>/dev/null)" = atpre ]; then
    chgrp atpred /etc/atpre/atpred.toml
fi
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -ge 2 ]; then
    # From 0.1 (state under the application's /var/lib/atpre, owned by atpre): stop, move and
    # hand over to atpred, start again if it ran. A no-op on later upgrades.
    if [ -e /var/lib/atpre/backups ] || [ -e /var/lib/atpre/history.jsonl ]; then
        active=$(systemctl is-active atpred.service 2>/dev/null || :)
        systemctl stop atpred.service atpred.socket >/dev/null 2>&1 || :
        /usr/lib/atpred/migrate-from-0.1 || :
        systemctl start atpred.socket >/dev/null 2>&1 || :
        if [ "$active" = active ]; then
            systemctl start atpred.service >/dev/null 2>&1 || :
        fi
    fi
    systemctl try-restart atpred.service >/dev/null 2>&1 || :
else
    systemctl enable atpred.socket atpred.service >/dev/null 2>&1 || :
fi
