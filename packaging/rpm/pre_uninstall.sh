# atpred on RPM systems: stop and disable on removal (not on upgrade, "$1" = 1).
if [ "$1" -eq 0 ]; then
    systemctl disable --now atpred.service atpred.socket >/dev/null 2>&1 || :
fi
