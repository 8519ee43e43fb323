"""The fast path is optional: without gptfast._C (no compiler, failed build)
everything runs on the reference with one warning; GPTFAST_REFERENCE=1 forces
the reference."""
import subprocess
import sys
import textwrap


def run_python(code: str, env_extra=None):
    import os

    env = dict(os.environ)
    env.pop("GPTFAST_REFERENCE", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env)


def test_missing_extension_falls_back_with_one_warning():
    result = run_python(
        """
        import sys, warnings
        class BlockNative:  # behave as if the C++ build had failed
            def find_spec(self, name, path=None, target=None):
                if name == "gptfast._C":
                    raise ImportError("simulated: no compiler")
        sys.meta_path.insert(0, BlockNative())
        import gptfast
        from gptfast.tokenizer import Tokenizer
        assert not gptfast.extension_available()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            a = Tokenizer.fit("hola mundo", kind="word")
            b = Tokenizer.fit("adios", kind="char")
        native = [w for w in caught if "gptfast._C" in str(w.message)]
        assert len(native) == 1, [str(w.message) for w in caught]
        assert a.backend == b.backend == "reference"
        assert list(a.encode("hola mundo")) == [a.stoi["hola"], a.stoi["mundo"]]
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_env_var_forces_reference_without_warning():
    result = run_python(
        """
        import warnings
        warnings.simplefilter("error")  # forcing the reference is not worth a warning
        from gptfast.tokenizer import Tokenizer
        tok = Tokenizer.fit("hola mundo", kind="word")
        assert tok.backend == "reference", tok.backend
        print("ok")
        """,
        {"GPTFAST_REFERENCE": "1"},
    )
    assert result.returncode == 0, result.stderr


def test_extension_is_used_when_built():
    result = run_python(
        """
        import gptfast
        from gptfast.tokenizer import Tokenizer
        print(gptfast.extension_available(), Tokenizer.fit("hola", kind="char").backend)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "cpp"], "gptfast._C was not built: reinstall with pip install -e ."
