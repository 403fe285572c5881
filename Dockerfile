# The berth image, FROM scratch. Nothing is pulled or downloaded: scripts/image puts the
# release binary and the shared libraries that `ldd` lists (glibc, libstdc++, libgcc_s and the
# dynamic loader) into rootfs/ of a temporary build context, then runs `docker build -t berth .`.
#
#   docker run -d -v /var/run/docker.sock:/var/run/docker.sock berth registrator \
#       --endpoints http://REGISTRY:2379 --hostname "$(hostname)" --ip HOST_IP
#   docker run -d --network container:web -v /var/run/docker.sock:/var/run/docker.sock berth \
#       announce --bind-container web --service web --host HOST_IP --port 8080 \
#       --check http://127.0.0.1:80/ --endpoints http://REGISTRY:2379
FROM scratch
COPY rootfs/ /
ENV BERTH_LOG=info
ENTRYPOINT ["/berth"]
CMD ["--help"]
