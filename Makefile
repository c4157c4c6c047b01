# Convenience targets; each is one script that says what it needs.
.PHONY: test demo deb rpm packages clean

test:
	./scripts/test

demo:
	./scripts/demo

deb:
	packaging/build-deb

rpm:
	packaging/build-rpm

packages: deb rpm

clean:
	rm -rf dist build *.egg-info .pybuild
